package gateway

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/wire"
)

// WSPath is the route of the WebSocket API.
const WSPath = "/v1/ws"

// DeviceKey is what the directory knows about a device, for authenticating its connections.
type DeviceKey struct {
	Public  e2ee.DevicePublic
	Account e2ee.AccountID
	Revoked bool
}

// ErrUnknownDevice is returned (wrapped) by a Directory for a device it does not know.
var ErrUnknownDevice = errors.New("gateway: unknown device")

// Directory looks up devices' keys (the key directory implements it; node wires it in).
type Directory interface {
	// DeviceKey returns the device's public keys and account. An unknown device is ErrUnknownDevice; a revoked
	// one has Revoked set.
	DeviceKey(ctx context.Context, id e2ee.DeviceID) (DeviceKey, error)
}

// PresencePublisher spreads a device's presence records over the grid (relay's presence service implements it).
type PresencePublisher interface {
	// Publish makes a verified signed presence record known to the grid; it does not wait for the network.
	Publish(ctx context.Context, record []byte) error
}

// Call is one request to an operation handler.
type Call struct {
	// ID and Op are the request's.
	ID uint64
	Op string
	// Body is the request's body, a JSON object; decode it with wire.StrictUnmarshal.
	Body json.RawMessage
	// Authenticated tells whether the connection has authenticated; Device and Account are set when it has.
	Authenticated bool
	Device        wire.DeviceID
	Account       e2ee.AccountID
	// Gateway and GatewayID are this gateway's peer ID in text and binary form, as the hello push gave them;
	// proofs bind GatewayID.
	Gateway   string
	GatewayID []byte

	// ConnID identifies the connection on this node (for services that keep per-connection state, such as
	// registration nonces; see Hub.OnConnClosed).
	ConnID string

	conn *conn
}

// TakeNonce returns the connection's hello nonce and marks it used: every nonce is good for one proof (auth or
// a service's registration). A second take fails with a *wire.Error of code wire.CodeBadNonce.
func (c *Call) TakeNonce() ([]byte, error) { return c.conn.takeNonce() }

// ExtendHandshake keeps a connection that has not authenticated open for d from now, past the handshake timeout
// (WSLimits.HandshakeTimeout), when that is later than its current deadline: a service that lets a device
// without keys take part in something bounded in time (a link rendezvous) uses it for that time. The frame size
// cap and rate limits before auth still apply. It reports whether the connection's deadline is now at least d
// away (true at once for an authenticated connection, false for one already being cut or without a
// connection). Call EndHandshakeExtension on the call's Pusher when the reason ends early.
func (c *Call) ExtendHandshake(d time.Duration) bool {
	if c.conn == nil {
		return false
	}
	return c.conn.extendHandshake(d)
}

// Handler runs one operation. It returns the response body (a struct, map or json.RawMessage encoding to a JSON
// object, or nil for {}), a Deferred to finish the work outside the connection's read loop, or an error: a
// *wire.Error reaches the client as is, any other error as wire.CodeInternal. Handlers run one at a time per
// connection, in request order.
type Handler func(ctx context.Context, c *Call) (any, error)

// Deferred is returned by a Handler whose work waits on something slow (an acknowledgement from another
// device): the gateway runs it in a goroutine of the connection, bounded by WSLimits.MaxInFlight, and sends its
// result as the response. What the handler did before returning is ordered; what the Deferred does is not.
type Deferred func(ctx context.Context) (any, error)

// Async is returned by a Handler whose result arrives by callback (a send whose recipients' outcomes come from
// other goroutines): the gateway calls it at once, in the connection's read loop, with a respond function that
// must be called exactly once, from any goroutine. It counts against WSLimits.MaxInFlight like a Deferred but
// needs no goroutine while it waits. An Async must not block.
type Async func(respond func(any, error))

// HandleOption changes how an operation is registered.
type HandleOption func(*opEntry)

// AllowUnauthenticated lets the operation run before the connection authenticates (auth itself, directory
// registration and lookups).
func AllowUnauthenticated() HandleOption { return func(e *opEntry) { e.preAuth = true } }

type opEntry struct {
	h       Handler
	preAuth bool
}

// HubConfig configures a Hub.
type HubConfig struct {
	// Gateway is this node's libp2p peer ID in text form, GatewayID the same in binary form, and Addrs its
	// multiaddrs: clients bind GatewayID into their auth proof and Gateway and Addrs into presence records.
	Gateway   string
	GatewayID []byte
	Addrs     []string
	// Directory authenticates devices (required).
	Directory Directory
	// Presence publishes presence records; nil keeps presence local.
	Presence PresencePublisher
	Limits   WSLimits
	// MaxCiphertext and MaxRecipients are the delivery limits announced in hello (the relay's).
	MaxCiphertext int
	MaxRecipients int
	// Metrics is the node's registry; nil registers nothing.
	Metrics prometheus.Registerer
	Logger  *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Hub is the WebSocket API of a node: it accepts client connections on WSPath, authenticates them as devices,
// dispatches their requests to registered operations and keeps the socket connection table (which devices are
// connected here, on which connections), through which envelopes are pushed to devices.
type Hub struct {
	cfg     HubConfig
	lim     WSLimits
	log     *slog.Logger
	now     func() time.Time
	metrics *wsMetrics

	opsMu sync.RWMutex
	ops   map[string]opEntry

	connSeq  atomic.Uint64
	onClose  []func(connID string)
	mu       sync.Mutex
	closed   bool
	conns    map[*conn]struct{}
	devices  map[wire.DeviceID]*deviceState
	accounts map[e2ee.AccountID]*accountState
	wg       sync.WaitGroup
}

type accountState struct {
	lim   *rate.Limiter
	conns int
}

// NewHub returns a Hub with the built-in operations (auth, presence, ack, ping). Mount it with
// Server.Handle("GET "+WSPath, hub).
func NewHub(cfg HubConfig) (*Hub, error) {
	if cfg.Gateway == "" || len(cfg.GatewayID) == 0 || cfg.Directory == nil {
		return nil, errors.New("gateway: new hub: Gateway, GatewayID and Directory are required")
	}
	cfg.Limits.fill()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m, err := newWSMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("gateway: new hub: %w", err)
	}
	h := &Hub{
		cfg: cfg, lim: cfg.Limits, log: cfg.Logger, now: cfg.Now, metrics: m,
		ops:      make(map[string]opEntry),
		conns:    make(map[*conn]struct{}),
		devices:  make(map[wire.DeviceID]*deviceState),
		accounts: make(map[e2ee.AccountID]*accountState),
	}
	for op, e := range map[string]opEntry{
		wire.OpAuth:     {h: h.opAuth, preAuth: true},
		wire.OpPing:     {h: opPing, preAuth: true},
		wire.OpPresence: {h: h.opPresence},
		wire.OpAck:      {h: h.opAck},
	} {
		h.ops[op] = e
	}
	return h, nil
}

// opPing answers "ping" with an empty body. Its body must be empty too, as strictly as any other body.
func opPing(_ context.Context, c *Call) (any, error) {
	if err := wire.StrictUnmarshal(c.Body, &struct{}{}); err != nil {
		return nil, wire.Errorf(wire.CodeBadRequest, "ping body must be {}: %v", err)
	}
	return nil, nil
}

// Limits returns the hub's limits with defaults filled in.
func (h *Hub) Limits() WSLimits { return h.lim }

// Handle registers an operation. Operations need an authenticated connection unless AllowUnauthenticated is
// given. Registering a name twice is an error.
func (h *Hub) Handle(op string, fn Handler, opts ...HandleOption) error {
	if op == "" || fn == nil {
		return errors.New("gateway: handle: empty op or nil handler")
	}
	e := opEntry{h: fn}
	for _, o := range opts {
		o(&e)
	}
	h.opsMu.Lock()
	defer h.opsMu.Unlock()
	if _, dup := h.ops[op]; dup {
		return fmt.Errorf("gateway: handle %q: already registered", op)
	}
	h.ops[op] = e
	return nil
}

// OnConnClosed registers f to run (in the connection's goroutine) after each connection ends, with its ConnID.
func (h *Hub) OnConnClosed(f func(connID string)) {
	h.opsMu.Lock()
	defer h.opsMu.Unlock()
	h.onClose = append(h.onClose, f)
}

func (h *Hub) op(name string) (opEntry, bool) {
	h.opsMu.RLock()
	defer h.opsMu.RUnlock()
	e, ok := h.ops[name]
	return e, ok
}

// ServeHTTP upgrades the request to a WebSocket and serves the connection until it ends.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	if len(h.conns) >= h.lim.MaxConns {
		h.mu.Unlock()
		h.metrics.closed.WithLabelValues("max_conns").Inc()
		http.Error(w, "too many connections", http.StatusServiceUnavailable)
		return
	}
	h.wg.Add(1)
	h.mu.Unlock()
	defer h.wg.Done()

	// The HTTP server's whole-request deadlines do not apply to a long-lived socket; the connection sets its own.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	bw := &batchWriter{ResponseWriter: w}
	ws, err := websocket.Accept(bw, r, &websocket.AcceptOptions{
		// Clients authenticate with device signatures, never with cookies, so cross-origin pages (the web client
		// served by another node) are as safe as same-origin ones.
		InsecureSkipVerify: true,
		CompressionMode:    websocket.CompressionDisabled,
	})
	if err != nil {
		return
	}
	c := newConn(h, ws)
	c.bc = bw.bc
	if !h.register(c) {
		_ = ws.Close(websocket.StatusGoingAway, "shutting down")
		return
	}
	c.serve(r.Context())
}

func (h *Hub) register(c *conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.conns[c] = struct{}{}
	h.metrics.conns.Inc()
	return true
}

// Close closes every connection (1001) and waits for their goroutines; pending deliveries fail. It is idempotent.
func (h *Hub) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		h.wg.Wait()
		return nil
	}
	h.closed = true
	conns := make([]*conn, 0, len(h.conns))
	for c := range h.conns {
		conns = append(conns, c)
	}
	h.mu.Unlock()
	for _, c := range conns {
		c.close(websocket.StatusGoingAway, "node shutting down", "shutdown")
	}
	h.wg.Wait()
	return nil
}

// newNonce returns a fresh random hello nonce.
func newNonce() ([]byte, error) {
	n := make([]byte, wire.NonceSize)
	if _, err := rand.Read(n); err != nil {
		return nil, err
	}
	return n, nil
}

// errorFor maps a handler error to the error frame the client gets.
func (h *Hub) errorFor(op string, err error) *wire.Error {
	var we *wire.Error
	if errors.As(err, &we) {
		if we.Reason == "" {
			return wire.Errorf(we.Code, "%s", we.Message)
		}
		return we
	}
	h.log.Warn("gateway: operation failed", "op", op, "err", err)
	return wire.Errorf(wire.CodeInternal, "%s failed", op)
}
