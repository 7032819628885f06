package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/iagon/gridchat/internal/wsmsg"
	"github.com/iagon/gridchat/wire"
)

// Connection limits and timings of the client side.
const (
	// maxServerFrame caps one frame from the gateway before the gateway's hello tells its own limit.
	maxServerFrame = 4 << 20
	// maxQueuedPushes caps pushes waiting for the client to process them; a gateway that exceeds it (it
	// should wait for acknowledgements) is disconnected.
	maxQueuedPushes = 8192
	// helloTimeout bounds the wait for the gateway's hello frame.
	helloTimeout = 10 * time.Second
)

// ErrDisconnected is returned by calls on a connection that went away.
var ErrDisconnected = errors.New("client: disconnected from gateway")

// conn is one WebSocket connection to a gateway: it correlates responses with requests by id and queues
// pushes for the owner. Its reader goroutine is stopped and waited for by close.
type conn struct {
	ws    *websocket.Conn
	url   string
	hello wire.Hello
	log   *slog.Logger
	// helloAt is when the hello arrived and helloRTT how long after the dial began: they date the gateway's
	// clock reading in the hello (clock.go).
	helloAt  time.Time
	helloRTT time.Duration

	// writeMu orders writes: the gateway requires request ids to arrive in increasing order, so an id is taken
	// and its frame written under one lock.
	writeMu sync.Mutex
	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan *wire.Response
	queue   []*wire.Push
	err     error // why the connection ended, once it has

	pushReady chan struct{} // signalled (non-blocking) when queue grows
	done      chan struct{} // closed when the reader stops
	lastRead  atomic.Int64  // when the last frame arrived, in unix nanoseconds
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// gatewayURL turns what a user types into the WebSocket URL of a gateway: "host:port", "http://host:port" and
// "ws://host:port" all work; without a path, wire.WebSocketPath is used.
func gatewayURL(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", errors.New("client: empty gateway URL")
	}
	if !strings.Contains(s, "://") {
		s = "ws://" + s
	}
	switch {
	case strings.HasPrefix(s, "http://"):
		s = "ws://" + strings.TrimPrefix(s, "http://")
	case strings.HasPrefix(s, "https://"):
		s = "wss://" + strings.TrimPrefix(s, "https://")
	case strings.HasPrefix(s, "ws://"), strings.HasPrefix(s, "wss://"):
	default:
		return "", fmt.Errorf("client: gateway URL %q: want ws://, wss://, http:// or https://", s)
	}
	rest := s[strings.Index(s, "://")+3:]
	if !strings.Contains(rest, "/") {
		s += webSocketPath
	}
	return s, nil
}

// dialConn opens a connection and waits for the gateway's hello.
func dialConn(ctx context.Context, url string, httpClient *http.Client, log *slog.Logger) (*conn, error) {
	start := time.Now()
	ws, _, err := websocket.Dial(ctx, url, dialOptions(httpClient))
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", url, err)
	}
	ws.SetReadLimit(maxServerFrame)
	hctx, cancel := context.WithTimeout(ctx, helloTimeout)
	defer cancel()
	_, data, err := wsmsg.Read(hctx, ws)
	if err != nil {
		ws.CloseNow()
		return nil, fmt.Errorf("client: %s: waiting for hello: %w", url, err)
	}
	helloAt := time.Now()
	f, err := wire.DecodeServerFrame(data)
	if err != nil || f.Push == nil || f.Push.Name != wire.PushHello {
		ws.CloseNow()
		return nil, fmt.Errorf("client: %s: first frame is not a hello: %v", url, err)
	}
	var h wire.Hello
	if err := json.Unmarshal(f.Push.Body, &h); err != nil || h.Version != wire.Version || len(h.Nonce) == 0 || h.Gateway == "" || len(h.GatewayID) == 0 {
		ws.CloseNow()
		return nil, fmt.Errorf("client: %s: bad hello (version %d): %v", url, h.Version, err)
	}
	if h.Limits.MaxFrameBytes > 0 {
		ws.SetReadLimit(int64(max(h.Limits.MaxFrameBytes, 64<<10)) + 4096)
	}
	c := &conn{
		ws: ws, url: url, hello: h, log: log, helloAt: helloAt, helloRTT: helloAt.Sub(start),
		pending:   map[uint64]chan *wire.Response{},
		pushReady: make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
	c.lastRead.Store(time.Now().UnixNano())
	c.wg.Go(c.readLoop)
	return c, nil
}

func (c *conn) readLoop() {
	defer close(c.done)
	for {
		_, data, err := wsmsg.Read(context.Background(), c.ws)
		if err != nil {
			c.fail(fmt.Errorf("%w: %s: %v", ErrDisconnected, c.url, err))
			return
		}
		c.lastRead.Store(time.Now().UnixNano())
		f, err := wire.DecodeServerFrame(data)
		if err != nil {
			c.fail(fmt.Errorf("%w: %s sent a bad frame: %v", ErrDisconnected, c.url, err))
			c.ws.Close(websocket.StatusProtocolError, "bad frame")
			return
		}
		if f.Response != nil {
			c.mu.Lock()
			ch := c.pending[f.Response.ID]
			delete(c.pending, f.Response.ID)
			c.mu.Unlock()
			if ch != nil {
				ch <- f.Response // buffered, one slot
			}
			continue
		}
		c.mu.Lock()
		if len(c.queue) >= maxQueuedPushes {
			c.mu.Unlock()
			c.fail(fmt.Errorf("%w: %s: more than %d unprocessed pushes", ErrDisconnected, c.url, maxQueuedPushes))
			c.ws.Close(websocket.StatusPolicyViolation, "push flood")
			return
		}
		c.queue = append(c.queue, f.Push)
		c.mu.Unlock()
		select {
		case c.pushReady <- struct{}{}:
		default:
		}
	}
}

// fail records why the connection ended and releases every waiting call.
func (c *conn) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
	}
	for id, ch := range c.pending {
		close(ch)
		delete(c.pending, id)
	}
}

// takePushes returns and clears the queued pushes.
func (c *conn) takePushes() []*wire.Push {
	c.mu.Lock()
	defer c.mu.Unlock()
	q := c.queue
	c.queue = nil
	return q
}

// silence returns how long ago the last frame arrived from the gateway.
func (c *conn) silence() time.Duration {
	return time.Since(time.Unix(0, c.lastRead.Load()))
}

// abandon ends a connection that stopped answering: err is recorded as why, and the socket is dropped without
// the close handshake, which a dead path would not complete. The reader then stops.
func (c *conn) abandon(err error) {
	c.fail(err)
	c.ws.CloseNow()
}

// Err returns why the connection ended, or nil while it is up.
func (c *conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// call sends one request and decodes its response body into out (which may be nil). A gateway error is
// returned as a *wire.Error, for errors.Is against the wire sentinels.
func (c *conn) call(ctx context.Context, op string, body, out any) error {
	ch := make(chan *wire.Response, 1)
	c.writeMu.Lock()
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		c.writeMu.Unlock()
		return err
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()
	frame, err := wire.EncodeRequest(id, op, body)
	if err != nil {
		c.writeMu.Unlock()
		c.forget(id)
		return fmt.Errorf("client: %s: %w", op, err)
	}
	err = c.ws.Write(ctx, websocket.MessageText, frame)
	c.writeMu.Unlock()
	if err != nil {
		c.forget(id)
		if ctx.Err() != nil {
			return fmt.Errorf("client: %s: %w", op, ctx.Err())
		}
		return fmt.Errorf("%w: %s: %s: %v", ErrDisconnected, c.url, op, err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return fmt.Errorf("client: %s: %w", op, c.Err())
		}
		if r.Error != nil {
			return fmt.Errorf("client: %s: %w", op, r.Error)
		}
		if out == nil {
			return nil
		}
		if err := json.Unmarshal(r.Body, out); err != nil {
			return fmt.Errorf("client: %s: bad response body: %w", op, err)
		}
		return nil
	case <-ctx.Done():
		c.forget(id)
		return fmt.Errorf("client: %s: %w", op, ctx.Err())
	}
}

func (c *conn) forget(id uint64) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// close closes the connection and waits for its reader. It is idempotent.
func (c *conn) close() {
	c.closeOnce.Do(func() {
		c.ws.Close(websocket.StatusNormalClosure, "bye")
		c.ws.CloseNow()
		c.wg.Wait()
		c.fail(ErrDisconnected)
	})
}
