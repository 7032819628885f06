package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/iagon/gridchat/e2ee/link"
	"github.com/iagon/gridchat/wire"
)

// Link relays. The gateway rendezvous that pairs two devices by rendezvous ID is specified in
// docs/PROTOCOL.md §7 "Link operations" and §9.6 (operations "link.open" and "link.send", pushes "link.frame"
// and "link.closed"); GatewayRelay speaks it. A rendezvous lives on one gateway: the host opens it where it is
// connected and shows that gateway (GatewayRelay.Gateway) with the invitation.
// PipeRelay connects two devices running in one process (or any app that carries the frames itself, e.g. over
// a local connection between the two devices).

const (
	opLinkOpen    = "link.open"
	opLinkSend    = "link.send"
	pushLinkFrame = "link.frame"
	// pushLinkClosed tells a side its rendezvous ended: {"rendezvous", "reason"}.
	pushLinkClosed = "link.closed"
	// maxLinkQueue caps link frames waiting to be read; a run has five to a few dozen.
	maxLinkQueue = 64
)

type linkOpen struct {
	Rendezvous []byte `json:"rendezvous"`
	Role       string `json:"role"` // "host" or "join"
}

type linkFrame struct {
	Rendezvous []byte `json:"rendezvous"`
	Frame      []byte `json:"frame"`
}

type linkClosed struct {
	Rendezvous []byte `json:"rendezvous"`
	Reason     string `json:"reason"`
}

// ErrLinkClosed is returned by a GatewayRelay's Recv after the gateway ended the rendezvous: the other device
// left, or it expired.
var ErrLinkClosed = errors.New("client: link rendezvous closed by the gateway")

// pipeEnd is one end of a PipeRelay.
type pipeEnd struct {
	in, out chan []byte
	once    *sync.Once
	done    chan struct{}
}

// PipeRelay returns two connected LinkRelays: what one end sends, the other receives.
func PipeRelay() (LinkRelay, LinkRelay) {
	a, b := make(chan []byte, maxLinkQueue), make(chan []byte, maxLinkQueue)
	once, done := &sync.Once{}, make(chan struct{})
	return &pipeEnd{in: a, out: b, once: once, done: done}, &pipeEnd{in: b, out: a, once: once, done: done}
}

func (p *pipeEnd) Send(ctx context.Context, f []byte) error {
	select {
	case p.out <- bytes.Clone(f):
		return nil
	case <-p.done:
		return errors.New("client: link relay closed")
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *pipeEnd) Recv(ctx context.Context) ([]byte, error) {
	select {
	case f := <-p.in:
		return f, nil
	case <-p.done:
		select {
		case f := <-p.in:
			return f, nil
		default:
		}
		return nil, errors.New("client: link relay closed")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close ends both sides once the frames already sent have been read.
func (p *pipeEnd) Close() error {
	p.once.Do(func() { close(p.done) })
	return nil
}

// GatewayRelay is a LinkRelay through a gateway's rendezvous (docs/PROTOCOL.md §9.6). A rendezvous lives on
// one gateway: the new device must join it on the gateway that Gateway names.
type GatewayRelay struct {
	g *gatewayRelay
}

// Gateway returns the WebSocket URL of the gateway that holds the rendezvous.
func (r *GatewayRelay) Gateway() string { return r.g.gateway }

// Send forwards one frame to the other device.
func (r *GatewayRelay) Send(ctx context.Context, f []byte) error { return r.g.Send(ctx, f) }

// Recv waits for the next frame from the other device. It fails once the gateway connection is gone (the
// rendezvous went with it).
func (r *GatewayRelay) Recv(ctx context.Context) ([]byte, error) { return r.g.Recv(ctx) }

// Close leaves the rendezvous on this side. It is idempotent.
func (r *GatewayRelay) Close() error { return r.g.Close() }

// gatewayRelay carries link frames through a gateway's rendezvous, on one connection.
type gatewayRelay struct {
	rendezvous []byte
	gateway    string
	cn         *conn
	frames     chan []byte
	closeFn    func()
	once       sync.Once

	endOnce sync.Once
	ended   chan struct{} // closed on link.closed
	reason  string        // link.closed's reason, written before ended is closed
}

func newGatewayRelay(rv []byte, gateway string, cn *conn) *gatewayRelay {
	return &gatewayRelay{rendezvous: rv, gateway: gateway, cn: cn, frames: make(chan []byte, maxLinkQueue),
		ended: make(chan struct{})}
}

// end records that the gateway closed the rendezvous.
func (g *gatewayRelay) end(reason string) {
	g.endOnce.Do(func() {
		g.reason = reason
		close(g.ended)
	})
}

func (g *gatewayRelay) Send(ctx context.Context, f []byte) error {
	if err := g.cn.call(ctx, opLinkSend, linkFrame{Rendezvous: g.rendezvous, Frame: f}, nil); err != nil {
		return fmt.Errorf("client: link relay send: %w", err)
	}
	return nil
}

func (g *gatewayRelay) Recv(ctx context.Context) ([]byte, error) {
	select {
	case f := <-g.frames:
		return f, nil
	case <-g.cn.done:
		select {
		case f := <-g.frames:
			return f, nil
		default:
		}
		return nil, fmt.Errorf("client: link relay: %w", ErrDisconnected)
	case <-g.ended:
		select {
		case f := <-g.frames:
			return f, nil
		default:
		}
		return nil, fmt.Errorf("%w (%s)", ErrLinkClosed, g.reason)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (g *gatewayRelay) Close() error {
	g.once.Do(g.closeFn)
	return nil
}

// parseLinkFrame decodes a "link.frame" push strictly.
func parseLinkFrame(p *wire.Push) (linkFrame, bool) {
	var lf linkFrame
	if err := wire.StrictUnmarshal(p.Body, &lf); err != nil || len(lf.Frame) == 0 || len(lf.Frame) > link.MaxFrameSize {
		return linkFrame{}, false
	}
	return lf, true
}

// deliverLinkFrame routes a "link.frame" push to the relay waiting for it.
func (c *Client) deliverLinkFrame(p *wire.Push) {
	lf, ok := parseLinkFrame(p)
	if !ok {
		return
	}
	c.mu.Lock()
	g := c.linkRelays[string(lf.Rendezvous)]
	c.mu.Unlock()
	if g == nil {
		return
	}
	select {
	case g.frames <- lf.Frame:
	default: // a flood: drop; the link run fails on the missing frame
	}
}

// deliverLinkClosed ends the relay of a "link.closed" push.
func (c *Client) deliverLinkClosed(p *wire.Push) {
	var lc linkClosed
	if err := wire.StrictUnmarshal(p.Body, &lc); err != nil || len(lc.Reason) > 64 {
		return
	}
	c.mu.Lock()
	g := c.linkRelays[string(lc.Rendezvous)]
	c.mu.Unlock()
	if g != nil {
		g.end(lc.Reason)
	}
}

// HostRelay opens inv's rendezvous on the client's current gateway connection, which the relay then keeps
// using: the new device must join on the gateway the relay's Gateway names, and the run fails if that
// connection drops.
func (c *Client) HostRelay(ctx context.Context, inv *Invitation) (*GatewayRelay, error) {
	cn, err := c.current(ctx)
	if err != nil {
		return nil, fmt.Errorf("client: open link rendezvous: %w", err)
	}
	rv := inv.Rendezvous()
	g := newGatewayRelay(rv, cn.url, cn)
	c.mu.Lock()
	if c.linkRelays == nil {
		c.linkRelays = map[string]*gatewayRelay{}
	}
	c.linkRelays[string(rv)] = g
	c.mu.Unlock()
	g.closeFn = func() {
		c.mu.Lock()
		if c.linkRelays[string(rv)] == g {
			delete(c.linkRelays, string(rv))
		}
		c.mu.Unlock()
	}
	if err := cn.call(ctx, opLinkOpen, linkOpen{Rendezvous: rv, Role: "host"}, nil); err != nil {
		g.Close()
		return nil, fmt.Errorf("client: open link rendezvous at %s: %w", cn.url, err)
	}
	return &GatewayRelay{g: g}, nil
}

// JoinRelay opens the ticket's rendezvous on a fresh, unauthenticated connection (the new device has no
// registered keys yet) to the first gateway of cfg that holds it: list the gateway the old device shows.
func JoinRelay(ctx context.Context, cfg Config, t link.Ticket) (*GatewayRelay, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var lastErr error = errors.New("client: no gateway configured")
	for _, url := range cfg.Gateways {
		cn, err := dialConn(ctx, url, cfg.HTTPClient, cfg.Logger)
		if err != nil {
			lastErr = err
			continue
		}
		g := newGatewayRelay(t.Rendezvous, url, cn)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				for _, p := range cn.takePushes() {
					switch p.Name {
					case pushLinkFrame:
						if lf, ok := parseLinkFrame(p); ok && bytes.Equal(lf.Rendezvous, t.Rendezvous) {
							select {
							case g.frames <- lf.Frame:
							default:
							}
						}
					case pushLinkClosed:
						var lc linkClosed
						if wire.StrictUnmarshal(p.Body, &lc) == nil && bytes.Equal(lc.Rendezvous, t.Rendezvous) && len(lc.Reason) <= 64 {
							g.end(lc.Reason)
						}
					}
				}
				select {
				case <-cn.pushReady:
				case <-cn.done:
					return
				case <-stop:
					return
				}
			}
		})
		g.closeFn = func() {
			close(stop)
			cn.close()
			wg.Wait()
		}
		if err := cn.call(ctx, opLinkOpen, linkOpen{Rendezvous: t.Rendezvous, Role: "join"}, nil); err != nil {
			g.Close()
			lastErr = fmt.Errorf("client: open link rendezvous at %s: %w", url, err)
			continue
		}
		return &GatewayRelay{g: g}, nil
	}
	return nil, lastErr
}
