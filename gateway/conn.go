package gateway

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/internal/wsmsg"
	"github.com/iagon/gridchat/wire"
)

// conn is one client WebSocket connection.
type conn struct {
	hub *Hub
	ws  *websocket.Conn
	bc  *batchConn // the connection under ws, whose writes the writer coalesces (nil: frame by frame)
	id  string

	ctx    context.Context // cancelled when the connection ends
	cancel context.CancelFunc

	send     chan []byte   // bounded send queue, drained by the writer
	sendMu   sync.Mutex    // serialises enqueue with the final drain
	inflight chan struct{} // one token per Deferred running
	limiter  *rate.Limiter
	lastSeen atomic.Int64 // unix nanos of the last frame or pong

	closeOnce   sync.Once
	closeReq    chan struct{} // closed by close; the writer then ends the connection
	closeCode   websocket.StatusCode
	closeReason string
	wg          sync.WaitGroup // writer, pinger and Deferred goroutines

	mu        sync.Mutex
	hsTimer   *time.Timer // the handshake deadline's timer, nil before serve sets it
	hsUntil   time.Time   // when hsTimer fires
	nonce     []byte
	nonceUsed bool
	authed    bool
	device    wire.DeviceID
	account   e2ee.AccountID
	acctLim   *rate.Limiter
}

func newConn(h *Hub, ws *websocket.Conn) *conn {
	c := &conn{
		hub:      h,
		ws:       ws,
		send:     make(chan []byte, h.lim.SendQueue),
		inflight: make(chan struct{}, h.lim.MaxInFlight),
		limiter:  rate.NewLimiter(rate.Limit(h.lim.RequestsPerSecond), h.lim.RequestBurst),
		closeReq: make(chan struct{}),
	}
	c.id = "ws-" + strconv.FormatUint(h.connSeq.Add(1), 10)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.lastSeen.Store(h.now().UnixNano())
	return c
}

func (c *conn) takeNonce() ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nonceUsed || c.nonce == nil {
		return nil, wire.Errorf(wire.CodeBadNonce, "this connection's nonce was already used")
	}
	c.nonceUsed = true
	return c.nonce, nil
}

// extendHandshake moves the handshake deadline of a connection that has not authenticated to d from now, when
// that is later than the current deadline. It reports whether the deadline is now at least d away.
func (c *conn) extendHandshake(d time.Duration) bool {
	return c.resetHandshake(d, true)
}

// resetHandshake sets the handshake deadline of a connection that has not authenticated to d from now, only
// later than the current one when later is set, only earlier otherwise. It reports whether the connection is
// still waiting for its deadline (or authenticated).
func (c *conn) resetHandshake(d time.Duration, later bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.authed || c.hsTimer == nil {
		return c.authed
	}
	until := time.Now().Add(d)
	if until.After(c.hsUntil) != later {
		return true
	}
	if !c.hsTimer.Stop() {
		return false // it fired: the connection is being cut
	}
	c.hsUntil = until
	c.hsTimer.Reset(d)
	return true
}

// EndHandshakeExtension ends what Call.ExtendHandshake granted: a connection that has still not authenticated
// gets the handshake timeout (WSLimits.HandshakeTimeout) again, counted from now, if that is sooner than its
// extended deadline. It does nothing for an authenticated connection.
func (p Pusher) EndHandshakeExtension() {
	if p.c != nil {
		p.c.resetHandshake(p.c.hub.lim.HandshakeTimeout, false)
	}
}

func (c *conn) identity() (bool, wire.DeviceID, e2ee.AccountID, *rate.Limiter) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.authed, c.device, c.account, c.acctLim
}

// serve runs the connection: hello, then the read loop until the client goes or the connection is closed.
func (c *conn) serve(reqCtx context.Context) {
	h := c.hub
	defer c.finish()
	c.ws.SetReadLimit(h.lim.MaxPreAuthFrameBytes)

	nonce, err := newNonce()
	if err != nil {
		c.close(websocket.StatusInternalError, "internal error", "internal")
		return
	}
	c.mu.Lock()
	c.nonce = nonce
	c.mu.Unlock()

	c.wg.Add(2)
	go c.writeLoop()
	go c.pingLoop()

	hello, err := wire.EncodePush(wire.PushHello, wire.Hello{
		Nonce: nonce, Gateway: h.cfg.Gateway, GatewayID: h.cfg.GatewayID, Addrs: h.cfg.Addrs, Version: wire.Version, Limits: h.wireLimits(),
		TimeMS: h.now().UnixMilli(),
	})
	if err != nil || !c.enqueue(hello) {
		c.close(websocket.StatusInternalError, "internal error", "internal")
		return
	}
	// The handshake deadline: a client that has not authenticated in time is cut, whatever it sends meanwhile.
	// A handler may extend it (extendHandshake) for a connection that needs longer without keys.
	c.mu.Lock()
	c.hsUntil = time.Now().Add(h.lim.HandshakeTimeout)
	c.hsTimer = time.AfterFunc(h.lim.HandshakeTimeout, func() {
		if authed, _, _, _ := c.identity(); !authed {
			c.close(CloseHandshakeTimeout, "handshake timeout", "handshake_timeout")
		}
	})
	timer := c.hsTimer
	c.mu.Unlock()
	defer timer.Stop()

	var lastID uint64
	violations := 0
	for !c.closing() {
		typ, data, err := wsmsg.Read(c.ctx, c.ws)
		if err != nil {
			var ce websocket.CloseError
			switch {
			case errors.As(err, &ce):
				h.metrics.closed.WithLabelValues("client").Inc()
			case websocket.CloseStatus(err) == -1 && c.ctx.Err() == nil && isReadLimit(err):
				h.metrics.closed.WithLabelValues("too_large").Inc()
			}
			c.close(websocket.StatusNormalClosure, "", "")
			return
		}
		c.lastSeen.Store(h.now().UnixNano())
		h.metrics.framesIn.Inc()

		authed, _, _, acctLim := c.identity()
		if !c.limiter.Allow() || (acctLim != nil && !acctLim.Allow()) {
			violations++
			req, _ := wire.DecodeRequest(data)
			c.refuse(req.ID, wire.Errorf(wire.CodeRateLimited, "rate limit exceeded; slow down"))
			if violations >= h.lim.MaxRateViolations {
				c.close(CloseRateLimited, "rate limit exceeded", "rate_limited")
				return
			}
			continue
		}
		violations = 0
		if typ != websocket.MessageText {
			c.refuse(0, wire.Errorf(wire.CodeMalformed, "frames are JSON text messages"))
			continue
		}
		req, err := wire.DecodeRequest(data)
		if err != nil {
			c.refuse(req.ID, h.errorFor("decode", err))
			continue
		}
		if req.ID <= lastID {
			c.refuse(req.ID, wire.Errorf(wire.CodeDuplicateID, "id %d is not greater than %d", req.ID, lastID))
			continue
		}
		lastID = req.ID
		e, ok := h.op(req.Op)
		if !ok {
			c.refuse(req.ID, wire.Errorf(wire.CodeUnknownOp, "no operation %q", req.Op))
			continue
		}
		if !authed && !e.preAuth {
			c.refuse(req.ID, wire.Errorf(wire.CodeUnauthenticated, "%s needs an authenticated connection; send auth first", req.Op))
			continue
		}
		if !c.dispatch(req, e) {
			return
		}
	}
}

// dispatch runs one request's handler; it returns false when the connection is over.
func (c *conn) dispatch(req wire.Request, e opEntry) bool {
	authed, dev, acct, _ := c.identity()
	call := &Call{ID: req.ID, Op: req.Op, Body: req.Body, Authenticated: authed, Device: dev, Account: acct,
		Gateway: c.hub.cfg.Gateway, GatewayID: c.hub.cfg.GatewayID, ConnID: c.id, conn: c}
	res, err := safeCall(func() (any, error) { return e.h(c.ctx, call) })
	if a, ok := res.(Async); ok && err == nil {
		select {
		case c.inflight <- struct{}{}:
		case <-c.ctx.Done():
			return false
		}
		var once sync.Once
		_, err = safeCall(func() (any, error) {
			a(func(res any, err error) {
				once.Do(func() {
					<-c.inflight
					c.respond(req, res, err)
				})
			})
			return nil, nil
		})
		if err != nil { // the Async panicked: answer now unless it already did
			once.Do(func() {
				<-c.inflight
				c.respond(req, nil, err)
			})
		}
		return true
	}
	if d, ok := res.(Deferred); ok && err == nil {
		select {
		case c.inflight <- struct{}{}:
		case <-c.ctx.Done():
			return false
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer func() { <-c.inflight }()
			res, err := safeCall(func() (any, error) { return d(c.ctx) })
			c.respond(req, res, err)
		}()
		return true
	}
	c.respond(req, res, err)
	if fatal := closeAfter(err); fatal != 0 {
		reason := c.hub.errorFor(req.Op, err).Reason
		c.close(fatal, reason, reason)
		return false
	}
	return true
}

// safeCall runs an operation so that a bug in it (a panic) fails that request, not the node.
func safeCall(f func() (any, error)) (res any, err error) {
	defer func() {
		if r := recover(); r != nil {
			res, err = nil, fmt.Errorf("gateway: operation panicked: %v", r)
		}
	}()
	return f()
}

func (c *conn) respond(req wire.Request, res any, err error) {
	if err != nil {
		c.refuse(req.ID, c.hub.errorFor(req.Op, err))
		return
	}
	b, err := wire.EncodeResponse(req.ID, res)
	if err != nil {
		c.refuse(req.ID, c.hub.errorFor(req.Op, err))
		return
	}
	c.enqueue(b)
}

// closeAfter returns the close code for errors that end the connection (failed auth), or 0.
func closeAfter(err error) websocket.StatusCode {
	var ae *authError
	if errors.As(err, &ae) {
		return CloseAuthFailed
	}
	return 0
}

// authError marks an auth failure: its error frame is sent, then the connection is closed.
type authError struct{ err *wire.Error }

func (e *authError) Error() string { return e.err.Error() }
func (e *authError) Unwrap() error { return e.err }

func (c *conn) refuse(id uint64, e *wire.Error) {
	c.hub.metrics.refused.WithLabelValues(e.Reason).Inc()
	c.enqueue(wire.EncodeError(id, e))
}

// enqueue queues a frame for the client without blocking. A full queue closes the connection as a slow
// consumer: the node never buffers without bound for a client that does not read.
func (c *conn) enqueue(frame []byte) bool {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	if c.closing() {
		return false
	}
	c.hub.metrics.queueDepth.Inc() // before the send, so the writer's decrement never comes first
	select {
	case c.send <- frame:
		return true
	default:
		c.hub.metrics.queueDepth.Dec()
		c.close(CloseSlowConsumer, "slow consumer: send queue full", "slow_consumer")
		return false
	}
}

// writeLoop writes queued frames in order, coalescing whatever is queued into one write to the socket. When
// the connection is closed it writes what is still queued (unless the client is a slow consumer), then the close
// frame, and only then cancels the connection's context, so an error frame that explains a close reaches the
// client before the close.
func (c *conn) writeLoop() {
	defer c.wg.Done()
	defer c.cancel()
	for {
		select {
		case <-c.closeReq:
		drain:
			for c.ctx.Err() == nil {
				select {
				case f := <-c.send:
					if c.writeBatch(f) != nil {
						break drain
					}
				default:
					break drain
				}
			}
			_ = c.ws.Close(c.closeCode, c.closeReason)
			return
		case f := <-c.send:
			if err := c.writeBatch(f); err != nil {
				c.close(websocket.StatusGoingAway, "write failed", "write_failed")
			}
		}
	}
}

// writeBatch writes f and every frame queued behind it (up to maxBatchBytes) with one write to the socket.
func (c *conn) writeBatch(f []byte) error {
	lim := c.hub.lim
	if c.bc == nil {
		for {
			c.hub.metrics.queueDepth.Dec()
			ctx, cancel := context.WithTimeout(c.ctx, lim.WriteTimeout)
			err := c.ws.Write(ctx, websocket.MessageText, f)
			cancel()
			if err != nil {
				return err
			}
			select {
			case f = <-c.send:
			default:
				return nil
			}
		}
	}
	// Inside a batch the library's writes land in memory and never block, so they need no deadline of their
	// own (a context without Done also spares a timer per frame); release bounds the one real write.
	ctx := context.WithoutCancel(c.ctx)
	c.bc.hold()
	for {
		c.hub.metrics.queueDepth.Dec()
		if err := c.ws.Write(ctx, websocket.MessageText, f); err != nil {
			_ = c.bc.release(c.ctx, lim.WriteTimeout)
			return err
		}
		if c.bc.buffered() >= maxBatchBytes {
			break
		}
		var more bool
		select {
		case f, more = <-c.send:
		default:
		}
		if !more {
			break
		}
	}
	return c.bc.release(c.ctx, lim.WriteTimeout)
}

func (c *conn) pingLoop() {
	defer c.wg.Done()
	lim := c.hub.lim
	t := time.NewTicker(lim.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(c.ctx, lim.PingInterval)
		err := c.ws.Ping(ctx)
		cancel()
		if err == nil {
			c.lastSeen.Store(c.hub.now().UnixNano())
		}
		if idle := c.hub.now().Sub(time.Unix(0, c.lastSeen.Load())); idle > lim.IdleTimeout {
			c.close(CloseIdleTimeout, "idle timeout", "idle_timeout")
			return
		}
	}
}

// close ends the connection once: the writer sends what is queued, then a close frame of code and reason.
// metric labels the cause in the closed-connections counter ("" for a client that left).
func (c *conn) close(code websocket.StatusCode, reason, metric string) {
	c.closeOnce.Do(func() {
		if metric != "" {
			c.hub.metrics.closed.WithLabelValues(metric).Inc()
		}
		c.closeCode, c.closeReason = code, reason
		close(c.closeReq)
		if code == CloseSlowConsumer || code == CloseIdleTimeout {
			// The client does not read (or is gone): a write may be blocked on it, and a close frame would not
			// get through.
			c.cancel()
		}
	})
}

func (c *conn) closing() bool {
	select {
	case <-c.closeReq:
		return true
	default:
		return false
	}
}

// finish runs when serve returns: it waits for the connection's goroutines and removes it from the hub.
func (c *conn) finish() {
	c.close(websocket.StatusNormalClosure, "", "")
	c.wg.Wait()
	_ = c.ws.CloseNow()
	c.cancel()
	// close happened before: enqueue refuses from now on, and under sendMu none is half done.
	c.sendMu.Lock()
	for len(c.send) > 0 {
		<-c.send
		c.hub.metrics.queueDepth.Dec()
	}
	c.sendMu.Unlock()
	c.hub.unregister(c)
	c.hub.opsMu.RLock()
	hooks := c.hub.onClose
	c.hub.opsMu.RUnlock()
	for _, f := range hooks {
		f(c.id)
	}
}

func isReadLimit(err error) bool {
	return err != nil && websocket.CloseStatus(err) == -1 && containsReadLimited(err.Error())
}

func containsReadLimited(s string) bool {
	const m = "read limited"
	for i := 0; i+len(m) <= len(s); i++ {
		if s[i:i+len(m)] == m {
			return true
		}
	}
	return false
}
