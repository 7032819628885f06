// Package gateway is the HTTP face of a node: health, metrics and node
// information today, and the client API and WebSocket routes that later
// services add to the same server with Handle before it starts.
package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ErrStarted is returned by Handle after Start and by a second Start.
var ErrStarted = errors.New("gateway: already started")

// ErrClosed is returned by Start after Close.
var ErrClosed = errors.New("gateway: closed")

// Node is what the gateway asks of the node it serves.
type Node interface {
	// ID is the node's peer ID.
	ID() peer.ID
	// Addrs are the node's libp2p listen addresses.
	Addrs() []multiaddr.Multiaddr
	// RoutingTableSize is the number of peers in the node's DHT routing table.
	RoutingTableSize() int
	// ConnectedPeers is the number of peers the node has connections to.
	ConnectedPeers() int
}

// Config configures a gateway server. Zero durations and sizes take the
// defaults named on each field.
type Config struct {
	// Addr is the host:port to listen on; port 0 picks a free port.
	Addr string
	// Version is reported by /v1/info.
	Version string
	// Registry serves /metrics and receives the gateway's own metrics.
	// Required: a node's own registry, never the global one.
	Registry *prometheus.Registry
	// Logger receives the gateway's logs. Default: discard.
	Logger *slog.Logger
	// ReadHeaderTimeout bounds reading a request's header. Default 5 s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request. Default 30 s.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing a response. Default 30 s. A handler that
	// holds its connection longer (a WebSocket) clears the deadlines with
	// http.ResponseController.
	WriteTimeout time.Duration
	// IdleTimeout closes idle keep-alive connections. Default 120 s.
	IdleTimeout time.Duration
	// MaxHeaderBytes caps a request's header. Default 16 KiB.
	MaxHeaderBytes int
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.ReadHeaderTimeout == 0 {
		c.ReadHeaderTimeout = 5 * time.Second
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = 30 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 30 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 120 * time.Second
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = 16 << 10
	}
	return c
}

// Info is the body of GET /v1/info.
type Info struct {
	PeerID           string   `json:"peer_id"`
	Addrs            []string `json:"addrs"`
	Version          string   `json:"version"`
	RoutingTableSize int      `json:"routing_table_size"`
	ConnectedPeers   int      `json:"connected_peers"`
}

// Server is a node's HTTP server. Add routes with Handle, then Start; Close
// stops it.
type Server struct {
	cfg  Config
	node Node
	log  *slog.Logger
	mux  *http.ServeMux

	requests *prometheus.CounterVec

	mu       sync.Mutex
	started  bool
	closed   bool
	ln       net.Listener
	srv      *http.Server
	serveErr chan error
	// reqCtx is every request's base context; Close cancels it first, so
	// that a handler waiting on the grid (a directory lookup stuck on a DHT
	// query) returns at once instead of holding Shutdown until its deadline.
	reqCtx    context.Context
	cancelReq context.CancelFunc
	// fresh holds the connections that have not yet sent a request
	// (http.StateNew). Shutdown counts them as busy for 5 s (net/http's rule
	// for a slow first request), so Close cuts them itself: a client's idle
	// spare connection would otherwise hold Close until its deadline.
	fresh map[net.Conn]struct{}
}

// New returns a server for node with the built-in routes (GET /healthz,
// GET /metrics, GET /v1/info). It binds its address at once, so that an
// address in use is reported here and URL is known before Start, but it
// serves nothing until Start. Close releases the address.
func New(cfg Config, node Node) (*Server, error) {
	cfg = cfg.withDefaults()
	if cfg.Registry == nil {
		return nil, errors.New("gateway: new: no metrics registry")
	}
	if node == nil {
		return nil, errors.New("gateway: new: no node")
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("gateway: new: listen address %q: %w", cfg.Addr, err)
	}
	s := &Server{
		cfg:  cfg,
		node: node,
		log:  cfg.Logger,
		mux:  http.NewServeMux(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gridchat",
			Subsystem: "gateway",
			Name:      "http_requests_total",
			Help:      "HTTP requests served by the gateway, by route pattern and status code.",
		}, []string{"route", "code"}),
	}
	if err := cfg.Registry.Register(s.requests); err != nil {
		return nil, fmt.Errorf("gateway: new: register metrics: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		cfg.Registry.Unregister(s.requests)
		return nil, fmt.Errorf("gateway: listen: %w", err)
	}
	s.ln = ln
	s.mux.HandleFunc("GET /healthz", s.handleHealth)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(s.log.Handler(), slog.LevelError),
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))
	s.mux.HandleFunc("GET /v1/info", s.handleInfo)
	return s, nil
}

// Handle adds a route, with net/http's pattern syntax ("GET /v1/ws"). It
// must be called before Start; afterwards it returns ErrStarted. A pattern
// that conflicts with an existing one is an error, not a panic.
func (s *Server) Handle(pattern string, h http.Handler) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return fmt.Errorf("gateway: handle %q: %w", pattern, ErrStarted)
	}
	defer func() {
		// ServeMux reports bad and conflicting patterns by panicking.
		if r := recover(); r != nil {
			err = fmt.Errorf("gateway: handle %q: %v", pattern, r)
		}
	}()
	s.mux.Handle(pattern, h)
	return nil
}

// Start serves the routes in the background.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.started {
		return ErrStarted
	}
	s.reqCtx, s.cancelReq = context.WithCancel(context.Background())
	s.srv = &http.Server{
		Handler:           s.instrument(s.mux),
		BaseContext:       func(net.Listener) context.Context { return s.reqCtx },
		ConnState:         s.connState,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.started = true
	s.serveErr = make(chan error, 1)
	srv, ln := s.srv, s.ln
	go func() { s.serveErr <- srv.Serve(ln) }()
	s.log.Info("gateway listening", "url", s.URL())
	return nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// URL returns the server's base URL (http://host:port). An unspecified
// listen host (0.0.0.0, ::) is shown as the loopback address.
func (s *Server) URL() string {
	a, ok := s.ln.Addr().(*net.TCPAddr)
	if !ok {
		return "http://" + s.ln.Addr().String()
	}
	host := a.IP
	if host.IsUnspecified() {
		if host.To4() != nil {
			host = net.IPv4(127, 0, 0, 1)
		} else {
			host = net.IPv6loopback
		}
	}
	return "http://" + net.JoinHostPort(host.String(), strconv.Itoa(a.Port))
}

// Close stops accepting requests, cancels the context of those in flight,
// waits up to ctx's deadline for them to return, then closes what remains.
// Hijacked connections (WebSockets) are not its to wait for: their owner
// closes them. It is safe to call more than once.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	srv, serveErr := s.srv, s.serveErr
	s.mu.Unlock()
	if srv == nil {
		// Never started: only the listener to release.
		if err := s.ln.Close(); err != nil {
			return fmt.Errorf("gateway: close: %w", err)
		}
		return nil
	}
	s.cancelReq()
	s.mu.Lock()
	for c := range s.fresh {
		_ = c.Close()
	}
	s.mu.Unlock()
	err := srv.Shutdown(ctx)
	if err != nil {
		// Out of time: drop the connections that are left.
		err = errors.Join(err, srv.Close())
	}
	if e := <-serveErr; e != nil && !errors.Is(e, http.ErrServerClosed) {
		err = errors.Join(err, e)
	}
	if err != nil {
		return fmt.Errorf("gateway: close: %w", err)
	}
	return nil
}

// connState tracks the connections without a request yet, and cuts one that
// arrives once Close has begun.
func (s *Server) connState(c net.Conn, st http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st != http.StateNew {
		delete(s.fresh, c)
		return
	}
	if s.closed {
		_ = c.Close()
		return
	}
	if s.fresh == nil {
		s.fresh = make(map[net.Conn]struct{})
	}
	s.fresh[c] = struct{}{}
}

func (s *Server) handleHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte("ok\n"))
}

func (s *Server) handleInfo(w http.ResponseWriter, _ *http.Request) {
	addrs := s.node.Addrs()
	info := Info{
		PeerID:           s.node.ID().String(),
		Addrs:            make([]string, 0, len(addrs)),
		Version:          s.cfg.Version,
		RoutingTableSize: s.node.RoutingTableSize(),
		ConnectedPeers:   s.node.ConnectedPeers(),
	}
	for _, a := range addrs {
		info.Addrs = append(info.Addrs, a.String())
	}
	writeJSON(w, http.StatusOK, info)
}

// writeJSON writes v as a JSON response.
func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}

// instrument counts requests by the pattern that matched them.
func (s *Server) instrument(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(rec, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		s.requests.WithLabelValues(route, strconv.Itoa(rec.code)).Inc()
	})
}

// statusRecorder remembers the status code a handler wrote. Unwrap lets
// http.ResponseController reach the connection (Hijack, deadlines).
type statusRecorder struct {
	http.ResponseWriter
	code        int
	wroteHeader bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.code, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
