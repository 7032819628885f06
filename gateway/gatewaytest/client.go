// Package gatewaytest is a WebSocket client of the gateway API for tests and benchmarks: it speaks the real
// protocol (docs/PROTOCOL.md §7) over github.com/coder/websocket, with pipelined requests and a bounded push
// queue that applies backpressure to the node when the test reads slowly.
package gatewaytest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/internal/wsmsg"
	"github.com/iagon/gridchat/wire"
)

// Options configures Dial.
type Options struct {
	// PushQueue is how many pushes the client buffers before it stops reading the socket (default 1024).
	PushQueue int
	// ReadLimit caps one frame from the gateway (default 1 MiB).
	ReadLimit int64
}

// Client is one WebSocket connection to a gateway.
type Client struct {
	ws     *websocket.Conn
	hello  wire.Hello
	pushes chan wire.Push
	done   chan struct{}

	mu          sync.Mutex
	nextID      uint64
	pending     map[uint64]chan wire.Response
	unsolicited []*wire.Error
	err         error
}

// Dial connects to a gateway's WebSocket URL (ws://host:port/v1/ws) and reads its hello.
func Dial(ctx context.Context, url string, opts Options) (*Client, error) {
	if opts.PushQueue <= 0 {
		opts.PushQueue = 1024
	}
	if opts.ReadLimit <= 0 {
		opts.ReadLimit = 1 << 20
	}
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return nil, fmt.Errorf("gatewaytest: dial %s: %w", url, err)
	}
	ws.SetReadLimit(opts.ReadLimit)
	_, data, err := wsmsg.Read(ctx, ws)
	if err != nil {
		_ = ws.CloseNow()
		return nil, fmt.Errorf("gatewaytest: read hello: %w", err)
	}
	f, err := wire.DecodeServerFrame(data)
	if err != nil || f.Push == nil || f.Push.Name != wire.PushHello {
		_ = ws.CloseNow()
		return nil, fmt.Errorf("gatewaytest: first frame is not hello: %q", data)
	}
	c := &Client{ws: ws, pushes: make(chan wire.Push, opts.PushQueue), done: make(chan struct{}),
		pending: make(map[uint64]chan wire.Response)}
	if err := wire.StrictUnmarshal(f.Push.Body, &c.hello); err != nil {
		_ = ws.CloseNow()
		return nil, fmt.Errorf("gatewaytest: hello: %w", err)
	}
	go c.readLoop()
	return c, nil
}

// WSURL turns a gateway base URL (http://host:port) into its WebSocket API URL.
func WSURL(base string) string {
	return "ws" + strings.TrimPrefix(base, "http") + "/v1/ws"
}

// Hello returns the gateway's hello.
func (c *Client) Hello() wire.Hello { return c.hello }

func (c *Client) readLoop() {
	defer close(c.done)
	defer close(c.pushes)
	for {
		_, data, err := wsmsg.Read(context.Background(), c.ws)
		if err != nil {
			c.fail(err)
			return
		}
		f, err := wire.DecodeServerFrame(data)
		if err != nil {
			c.fail(fmt.Errorf("gatewaytest: bad frame %q: %w", data, err))
			_ = c.ws.CloseNow()
			return
		}
		if f.Push != nil {
			c.pushes <- *f.Push // blocks when the test reads slowly: the socket is then not read
			continue
		}
		c.mu.Lock()
		ch := c.pending[f.Response.ID]
		delete(c.pending, f.Response.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- *f.Response
		} else if f.Response.ID == 0 && f.Response.Error != nil {
			c.mu.Lock()
			c.unsolicited = append(c.unsolicited, f.Response.Error)
			c.mu.Unlock()
		}
	}
}

func (c *Client) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
	}
	for id, ch := range c.pending {
		delete(c.pending, id)
		close(ch)
	}
}

// Err returns why the connection ended (a websocket.CloseError carries the gateway's close code), or nil.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Done is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.done }

// CloseStatus waits until the connection ends (or ctx ends) and returns the close code the gateway sent, or -1.
func (c *Client) CloseStatus(ctx context.Context) websocket.StatusCode {
	select {
	case <-c.done:
	case <-ctx.Done():
		return -1
	}
	return websocket.CloseStatus(c.Err())
}

// Start sends a request without waiting and returns the channel its response arrives on (closed if the
// connection ends first).
func (c *Client) Start(ctx context.Context, op string, body any) (<-chan wire.Response, error) {
	ch := make(chan wire.Response, 1)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.err
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()
	frame, err := wire.EncodeRequest(id, op, body)
	if err == nil {
		err = c.ws.Write(ctx, websocket.MessageText, frame)
	}
	if err != nil {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
		return nil, fmt.Errorf("gatewaytest: %s: %w", op, err)
	}
	return ch, nil
}

// Call sends a request and waits for its response. An error frame is returned as its *wire.Error.
func (c *Client) Call(ctx context.Context, op string, body any) (json.RawMessage, error) {
	ch, err := c.Start(ctx, op, body)
	if err != nil {
		return nil, err
	}
	return Wait(ctx, ch)
}

// Wait waits for a response started with Start.
func Wait(ctx context.Context, ch <-chan wire.Response) (json.RawMessage, error) {
	select {
	case r, ok := <-ch:
		if !ok {
			return nil, errors.New("gatewaytest: connection closed before the response")
		}
		if r.Error != nil {
			return nil, r.Error
		}
		return r.Body, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// WriteRaw writes one text frame as is (to test malformed input).
func (c *Client) WriteRaw(ctx context.Context, data []byte) error {
	return c.ws.Write(ctx, websocket.MessageText, data)
}

// Unsolicited returns the error frames with id 0 received so far (answers to frames whose id was unreadable).
func (c *Client) Unsolicited() []*wire.Error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*wire.Error(nil), c.unsolicited...)
}

// AuthBody makes the body of an auth request for dev on this connection: the connection proof over the
// hello's nonce and gateway, and presence records (online with sequence seq, offline with seq+1) valid for
// ttl.
func (c *Client) AuthBody(dev *e2ee.DeviceKeys, now time.Time, seq uint64, ttl time.Duration) (wire.AuthRequest, error) {
	proof, err := e2ee.SignAuth(dev, c.hello.GatewayID, c.hello.Nonce, now)
	if err != nil {
		return wire.AuthRequest{}, err
	}
	on, off, err := PresencePair(dev, c.hello, now, seq, ttl)
	if err != nil {
		return wire.AuthRequest{}, err
	}
	id := dev.ID()
	return wire.AuthRequest{DeviceID: id[:], Nonce: c.hello.Nonce, Time: proof.Time.Unix(), Signature: proof.Sig,
		Presence: on, Offline: off}, nil
}

// PresencePair signs dev's online (seq) and offline (seq+1) presence records for the hello's gateway.
func PresencePair(dev *e2ee.DeviceKeys, hello wire.Hello, now time.Time, seq uint64, ttl time.Duration) ([]byte, []byte, error) {
	p := wire.Presence{Gateway: hello.Gateway, Addrs: hello.Addrs, Seq: seq, Expires: now.Add(ttl), Online: true}
	on, err := wire.SignPresence(dev, p, now)
	if err != nil {
		return nil, nil, err
	}
	p.Seq, p.Online = seq+1, false
	off, err := wire.SignPresence(dev, p, now)
	return on, off, err
}

// Auth authenticates the connection as dev, with presence sequence numbers from the clock.
func (c *Client) Auth(ctx context.Context, dev *e2ee.DeviceKeys) (wire.AuthResponse, error) {
	now := time.Now()
	body, err := c.AuthBody(dev, now, uint64(now.UnixNano()), 30*time.Minute)
	if err != nil {
		return wire.AuthResponse{}, err
	}
	raw, err := c.Call(ctx, wire.OpAuth, body)
	if err != nil {
		return wire.AuthResponse{}, err
	}
	var r wire.AuthResponse
	return r, wire.StrictUnmarshal(raw, &r)
}

// Send sends one envelope and waits for the per-recipient results.
func (c *Client) Send(ctx context.Context, msgID []byte, ciphertext []byte, recipients ...e2ee.DeviceID) (wire.SendResponse, error) {
	ch, err := c.StartSend(ctx, msgID, ciphertext, recipients...)
	if err != nil {
		return wire.SendResponse{}, err
	}
	return WaitSend(ctx, ch)
}

// StartSend sends one envelope without waiting.
func (c *Client) StartSend(ctx context.Context, msgID []byte, ciphertext []byte, recipients ...e2ee.DeviceID) (<-chan wire.Response, error) {
	req := wire.SendRequest{MessageID: msgID, Ciphertext: ciphertext}
	for _, r := range recipients {
		req.Recipients = append(req.Recipients, append([]byte(nil), r[:]...))
	}
	return c.Start(ctx, wire.OpSend, req)
}

// WaitSend waits for a send started with StartSend.
func WaitSend(ctx context.Context, ch <-chan wire.Response) (wire.SendResponse, error) {
	raw, err := Wait(ctx, ch)
	if err != nil {
		return wire.SendResponse{}, err
	}
	var r wire.SendResponse
	return r, wire.StrictUnmarshal(raw, &r)
}

// NextEnvelope waits for the next push and decodes it as an envelope (any other push is an error).
func (c *Client) NextEnvelope(ctx context.Context) (wire.EnvelopePush, error) {
	select {
	case p, ok := <-c.pushes:
		if !ok {
			return wire.EnvelopePush{}, fmt.Errorf("gatewaytest: connection ended: %v", c.Err())
		}
		if p.Name != wire.PushEnvelope {
			return wire.EnvelopePush{}, fmt.Errorf("gatewaytest: push %q, want envelope", p.Name)
		}
		var e wire.EnvelopePush
		return e, wire.StrictUnmarshal(p.Body, &e)
	case <-ctx.Done():
		return wire.EnvelopePush{}, ctx.Err()
	}
}

// Pushes returns the channel of pushes (closed when the connection ends).
func (c *Client) Pushes() <-chan wire.Push { return c.pushes }

// Ack acknowledges an envelope without waiting for the response.
func (c *Client) Ack(ctx context.Context, e wire.EnvelopePush) error {
	_, err := c.Start(ctx, wire.OpAck, wire.Ack{MessageID: e.MessageID, SenderDevice: e.SenderDevice})
	return err
}

// AckMany acknowledges envelopes with one batched "ack" frame, without waiting for the response.
func (c *Client) AckMany(ctx context.Context, envs ...wire.EnvelopePush) error {
	a := wire.Ack{Acks: make([]wire.AckEntry, len(envs))}
	for i, e := range envs {
		a.Acks[i] = wire.AckEntry{MessageID: e.MessageID, SenderDevice: e.SenderDevice}
	}
	_, err := c.Start(ctx, wire.OpAck, a)
	return err
}

// Close closes the connection normally and waits for the reader.
func (c *Client) Close() {
	// Drain pushes so a reader blocked on a full queue can see the end.
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for range c.pushes {
		}
	}()
	_ = c.ws.Close(websocket.StatusNormalClosure, "")
	_ = c.ws.CloseNow()
	<-drained
	<-c.done
}
