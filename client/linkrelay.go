package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/iagon/gridchat/e2ee/link"
	"github.com/iagon/gridchat/wire"
)

// Link relays. The gateway rendezvous that pairs two devices by rendezvous ID is specified in
// docs/PROTOCOL.md §9.6 (operations "link.open" and "link.send", push "link.frame"); GatewayRelay speaks it.
// PipeRelay connects two devices running in one process (or any app that carries the frames itself, e.g. over
// a local connection between the two devices).

const (
	opLinkOpen    = "link.open"
	opLinkSend    = "link.send"
	pushLinkFrame = "link.frame"
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

// gatewayRelay carries link frames through a gateway's rendezvous.
type gatewayRelay struct {
	rendezvous []byte
	call       func(ctx context.Context, op string, body, out any) error
	frames     chan []byte
	closeFn    func()
	once       sync.Once
}

func (g *gatewayRelay) Send(ctx context.Context, f []byte) error {
	return g.call(ctx, opLinkSend, linkFrame{Rendezvous: g.rendezvous, Frame: f}, nil)
}

func (g *gatewayRelay) Recv(ctx context.Context) ([]byte, error) {
	select {
	case f := <-g.frames:
		return f, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (g *gatewayRelay) Close() error {
	g.once.Do(g.closeFn)
	return nil
}

// deliverLinkFrame routes a "link.frame" push to the relay waiting for it.
func (c *Client) deliverLinkFrame(p *wire.Push) {
	var lf linkFrame
	if err := wire.StrictUnmarshal(p.Body, &lf); err != nil || len(lf.Frame) > link.MaxFrameSize {
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

// HostRelay opens inv's rendezvous on the client's gateway connection.
func (c *Client) HostRelay(ctx context.Context, inv *Invitation) (LinkRelay, error) {
	rv := inv.Rendezvous()
	g := &gatewayRelay{rendezvous: rv, call: c.call, frames: make(chan []byte, maxLinkQueue)}
	c.mu.Lock()
	if c.linkRelays == nil {
		c.linkRelays = map[string]*gatewayRelay{}
	}
	c.linkRelays[string(rv)] = g
	c.mu.Unlock()
	g.closeFn = func() {
		c.mu.Lock()
		delete(c.linkRelays, string(rv))
		c.mu.Unlock()
	}
	if err := c.call(ctx, opLinkOpen, linkOpen{Rendezvous: rv, Role: "host"}, nil); err != nil {
		g.Close()
		return nil, fmt.Errorf("client: open link rendezvous: %w (does this gateway relay device links?)", err)
	}
	return g, nil
}

// JoinRelay opens the ticket's rendezvous on a fresh, unauthenticated connection to the first gateway of cfg
// that answers (the new device has no registered keys yet).
func JoinRelay(ctx context.Context, cfg Config, t link.Ticket) (LinkRelay, error) {
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
		g := &gatewayRelay{rendezvous: t.Rendezvous, call: cn.call, frames: make(chan []byte, maxLinkQueue)}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				for _, p := range cn.takePushes() {
					if p.Name != pushLinkFrame {
						continue
					}
					var lf linkFrame
					if err := json.Unmarshal(p.Body, &lf); err == nil && bytes.Equal(lf.Rendezvous, t.Rendezvous) {
						select {
						case g.frames <- lf.Frame:
						default:
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
		return g, nil
	}
	return nil, lastErr
}
