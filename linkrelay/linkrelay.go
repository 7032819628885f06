// Package linkrelay is the gateway rendezvous of device linking: it pairs the old device's authenticated
// connection (the host) with the new device's connection (the joiner, which has no keys yet and need not
// authenticate) under a rendezvous ID, and forwards the opaque link frames between them as "link.frame" pushes
// (docs/PROTOCOL.md §9.6). A rendezvous lives on one gateway only.
package linkrelay

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/iagon/gridchat/e2ee/link"
	"github.com/iagon/gridchat/gateway"
	"github.com/iagon/gridchat/wire"
)

// The WebSocket operations and push of the rendezvous.
const (
	// OpOpen opens or joins a rendezvous: body OpenRequest, response {}.
	OpOpen = "link.open"
	// OpSend forwards one frame to the other side: body Frame, response {}.
	OpSend = "link.send"
	// PushFrame carries a frame from the other side: body Frame.
	PushFrame = "link.frame"
	// PushClosed tells a side that its rendezvous ended (the other side left, it expired or it used up its
	// frames): body Closed.
	PushClosed = "link.closed"
)

// Roles of OpenRequest.
const (
	RoleHost = "host" // the old device, which made the invitation; its connection must be authenticated
	RoleJoin = "join" // the new device
)

// OpenRequest is the body of "link.open".
type OpenRequest struct {
	Rendezvous []byte `json:"rendezvous"`
	Role       string `json:"role"`
}

// Frame is the body of "link.send" and of the "link.frame" push.
type Frame struct {
	Rendezvous []byte `json:"rendezvous"`
	Frame      []byte `json:"frame"`
}

// Closed is the body of the "link.closed" push.
type Closed struct {
	Rendezvous []byte `json:"rendezvous"`
	// Reason is "expired", "disconnected", "frames" or "peer_gone".
	Reason string `json:"reason"`
}

// notice is a link.closed push to send once the service's lock is released.
type notice struct {
	push gateway.Pusher
	body Closed
	end  bool // the side takes part in no other rendezvous: end its handshake extension
}

// sendNotices tells each side that its rendezvous ended; a side left in no rendezvous that has not authenticated
// (a joiner) gets the handshake timeout again from now (its connection was kept open for it, see opOpen).
func sendNotices(ns []notice) {
	for _, n := range ns {
		_ = n.push.Push(PushClosed, n.body) // the side may be gone too; nothing to tell then
		if n.end {
			n.push.EndHandshakeExtension()
		}
	}
}

// Limits bounds the rendezvous. DefaultLimits gives the documented defaults (docs/PROTOCOL.md §8); zero fields
// take them.
type Limits struct {
	// TTL is how long a rendezvous waits for its joiner, and how long a paired one may stay without a frame.
	// Default 5 min (an invitation's lifetime).
	TTL time.Duration
	// MaxLifetime ends a rendezvous however busy it is. Default 15 min.
	MaxLifetime time.Duration
	// MinIDBytes and MaxIDBytes bound a rendezvous ID (a short code's is 5 bytes, a QR code's 16). Default 5
	// and 64.
	MinIDBytes, MaxIDBytes int
	// MaxFrameBytes caps one frame. Default link.MaxFrameSize.
	MaxFrameBytes int
	// MaxFrames caps the frames one rendezvous carries, both directions together (a linking run sends about
	// eight). Default 64.
	MaxFrames int
	// MaxRendezvous caps the live rendezvous of the node. Default 10,000.
	MaxRendezvous int
	// MaxPerConn caps the live rendezvous one connection takes part in. Default 4.
	MaxPerConn int
	// OpensPerSecond and OpenBurst rate-limit link.open per connection. Default 0.2/s (one per 5 s), burst 5.
	OpensPerSecond float64
	OpenBurst      int
	// SweepInterval is how often expired rendezvous are dropped in the background (they are also dropped
	// when touched). Default 30 s.
	SweepInterval time.Duration
}

// DefaultLimits returns the default limits.
func DefaultLimits() Limits {
	return Limits{
		TTL:            link.DefaultLifetime,
		MaxLifetime:    15 * time.Minute,
		MinIDBytes:     5,
		MaxIDBytes:     64,
		MaxFrameBytes:  link.MaxFrameSize,
		MaxFrames:      64,
		MaxRendezvous:  10_000,
		MaxPerConn:     4,
		OpensPerSecond: 0.2,
		OpenBurst:      5,
		SweepInterval:  30 * time.Second,
	}
}

func (l *Limits) fill() {
	d := DefaultLimits()
	setD := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	setI := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	setD(&l.TTL, d.TTL)
	setD(&l.MaxLifetime, d.MaxLifetime)
	setI(&l.MinIDBytes, d.MinIDBytes)
	setI(&l.MaxIDBytes, d.MaxIDBytes)
	setI(&l.MaxFrameBytes, d.MaxFrameBytes)
	setI(&l.MaxFrames, d.MaxFrames)
	setI(&l.MaxRendezvous, d.MaxRendezvous)
	setI(&l.MaxPerConn, d.MaxPerConn)
	if l.OpensPerSecond <= 0 {
		l.OpensPerSecond = d.OpensPerSecond
	}
	setI(&l.OpenBurst, d.OpenBurst)
	setD(&l.SweepInterval, d.SweepInterval)
}

// Config configures a Service.
type Config struct {
	Limits Limits
	// Clock is the service's clock (expiry, open rate). Default time.Now.
	Clock func() time.Time
	// Metrics is the node's registry; nil registers nothing.
	Metrics prometheus.Registerer
	// Logger receives the service's logs. Default: discard.
	Logger *slog.Logger
}

// Hub is what the service needs of the WebSocket API (gateway.Hub implements it).
type Hub interface {
	Handle(op string, fn gateway.Handler, opts ...gateway.HandleOption) error
	OnConnClosed(f func(connID string))
}

// side is one connection of a rendezvous.
type side struct {
	connID string
	push   gateway.Pusher
}

// rendezvous is one pairing in progress.
type rendezvous struct {
	id         string
	host, join *side
	created    time.Time
	active     time.Time // the last open or frame
	frames     int
}

// connState is what the service keeps per connection that opened a rendezvous.
type connState struct {
	opens *rate.Limiter
	rvs   map[string]struct{}
}

// Service is the rendezvous of one gateway. Register it on the gateway's Hub; Close stops its sweeper.
type Service struct {
	lim     Limits
	now     func() time.Time
	log     *slog.Logger
	metrics *metrics

	mu    sync.Mutex
	rvs   map[string]*rendezvous
	conns map[string]*connState

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New returns a rendezvous service and starts its sweeper.
func New(cfg Config) (*Service, error) {
	cfg.Limits.fill()
	if cfg.Limits.MinIDBytes > cfg.Limits.MaxIDBytes {
		return nil, fmt.Errorf("linkrelay: new: rendezvous ID bounds %d > %d", cfg.Limits.MinIDBytes, cfg.Limits.MaxIDBytes)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("linkrelay: new: %w", err)
	}
	s := &Service{
		lim: cfg.Limits, now: cfg.Clock, log: cfg.Logger, metrics: m,
		rvs: make(map[string]*rendezvous), conns: make(map[string]*connState),
		stop: make(chan struct{}),
	}
	s.wg.Go(s.sweepLoop)
	return s, nil
}

// Register adds link.open and link.send to hub (both allowed before auth: the joiner has no keys yet) and
// drops a connection's rendezvous when it ends.
func (s *Service) Register(hub Hub) error {
	hub.OnConnClosed(s.connClosed)
	if err := hub.Handle(OpOpen, s.opOpen, gateway.AllowUnauthenticated()); err != nil {
		return fmt.Errorf("linkrelay: register: %w", err)
	}
	if err := hub.Handle(OpSend, s.opSend, gateway.AllowUnauthenticated()); err != nil {
		return fmt.Errorf("linkrelay: register: %w", err)
	}
	return nil
}

// Close stops the sweeper and forgets every rendezvous. It is idempotent.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		s.wg.Wait()
		s.mu.Lock()
		clear(s.rvs)
		clear(s.conns)
		s.metrics.live.Set(0)
		s.mu.Unlock()
	})
	return nil
}

// Len returns the number of live rendezvous (expired ones not yet swept included).
func (s *Service) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.rvs)
}

// Sweep drops every expired rendezvous and returns how many it dropped. The sweeper calls it every
// SweepInterval.
func (s *Service) Sweep() int {
	now := s.now()
	var ns []notice
	n := 0
	s.mu.Lock()
	for _, r := range s.rvs {
		if s.expired(r, now) {
			s.drop(r, "expired", &ns)
			n++
		}
	}
	s.mu.Unlock()
	sendNotices(ns)
	return n
}

func (s *Service) sweepLoop() {
	t := time.NewTicker(s.lim.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.Sweep()
		case <-s.stop:
			return
		}
	}
}

// expired tells whether r is past its time: unpaired or idle for TTL, or alive for MaxLifetime.
func (s *Service) expired(r *rendezvous, now time.Time) bool {
	return now.Sub(r.active) >= s.lim.TTL || now.Sub(r.created) >= s.lim.MaxLifetime
}

// drop forgets r and adds a link.closed notice for each of its sides to ns; s.mu is held.
func (s *Service) drop(r *rendezvous, reason string, ns *[]notice) {
	delete(s.rvs, r.id)
	for _, sd := range []*side{r.host, r.join} {
		if sd == nil {
			continue
		}
		end := true
		if cs := s.conns[sd.connID]; cs != nil {
			delete(cs.rvs, r.id)
			end = len(cs.rvs) == 0
		}
		*ns = append(*ns, notice{push: sd.push, body: Closed{Rendezvous: []byte(r.id), Reason: reason}, end: end})
	}
	s.metrics.dropped.WithLabelValues(reason).Inc()
	s.metrics.live.Set(float64(len(s.rvs)))
}

// lookup returns the live rendezvous id, dropping it if it expired; s.mu is held.
func (s *Service) lookup(id string, now time.Time, ns *[]notice) *rendezvous {
	r := s.rvs[id]
	if r != nil && s.expired(r, now) {
		s.drop(r, "expired", ns)
		return nil
	}
	return r
}

// conn returns the state of connection connID, creating it; s.mu is held.
func (s *Service) conn(connID string) *connState {
	cs := s.conns[connID]
	if cs == nil {
		cs = &connState{opens: rate.NewLimiter(rate.Limit(s.lim.OpensPerSecond), s.lim.OpenBurst), rvs: map[string]struct{}{}}
		s.conns[connID] = cs
	}
	return cs
}

func (s *Service) refuse(op string, e *wire.Error) error {
	s.metrics.refused.WithLabelValues(op, e.Reason).Inc()
	return e
}

func (s *Service) opOpen(_ context.Context, c *gateway.Call) (any, error) {
	var req OpenRequest
	if err := wire.StrictUnmarshal(c.Body, &req); err != nil {
		return nil, s.refuse(OpOpen, wire.Errorf(wire.CodeBadRequest, "link.open body: %v", err))
	}
	if n := len(req.Rendezvous); n < s.lim.MinIDBytes || n > s.lim.MaxIDBytes {
		return nil, s.refuse(OpOpen, wire.Errorf(wire.CodeBadRequest, "rendezvous ID of %d bytes; want %d to %d", n, s.lim.MinIDBytes, s.lim.MaxIDBytes))
	}
	if req.Role != RoleHost && req.Role != RoleJoin {
		return nil, s.refuse(OpOpen, wire.Errorf(wire.CodeBadRequest, "role %q; want %q or %q", req.Role, RoleHost, RoleJoin))
	}
	if req.Role == RoleHost && !c.Authenticated {
		return nil, s.refuse(OpOpen, wire.Errorf(wire.CodeUnauthenticated, "hosting a link rendezvous needs an authenticated connection"))
	}
	now := s.now()
	id := string(req.Rendezvous)
	var ns []notice
	defer func() { sendNotices(ns) }() // runs after the unlock below
	s.mu.Lock()
	defer s.mu.Unlock()
	cs := s.conn(c.ConnID)
	if !cs.opens.AllowN(now, 1) {
		return nil, s.refuse(OpOpen, wire.Errorf(wire.CodeRateLimited, "too many link.open on this connection; slow down"))
	}
	if len(cs.rvs) >= s.lim.MaxPerConn {
		return nil, s.refuse(OpOpen, wire.Errorf(wire.CodeBusy, "this connection takes part in %d rendezvous already", len(cs.rvs)))
	}
	r := s.lookup(id, now, &ns)
	me := &side{connID: c.ConnID, push: c.Pusher()}
	switch req.Role {
	case RoleHost:
		if r != nil {
			return nil, s.refuse(OpOpen, wire.Errorf(wire.CodeLinkTaken, "the rendezvous is already open; make a new invitation"))
		}
		if len(s.rvs) >= s.lim.MaxRendezvous {
			return nil, s.refuse(OpOpen, wire.Errorf(wire.CodeBusy, "this gateway holds as many link rendezvous as it allows; retry later"))
		}
		r = &rendezvous{id: id, host: me, created: now, active: now}
		s.rvs[id] = r
		s.metrics.live.Set(float64(len(s.rvs)))
	case RoleJoin:
		switch {
		case r == nil:
			return nil, s.refuse(OpOpen, wire.Errorf(wire.CodeNotFound, "no open link rendezvous with this ID on this gateway (link on the gateway the old device shows)"))
		case r.join != nil:
			return nil, s.refuse(OpOpen, wire.Errorf(wire.CodeLinkTaken, "another device has joined this rendezvous already"))
		case r.host.connID == c.ConnID:
			return nil, s.refuse(OpOpen, wire.Errorf(wire.CodeBadRequest, "a connection cannot join its own rendezvous"))
		}
		r.join, r.active = me, now
		// A joiner has no keys to authenticate with: its connection stays open past the handshake timeout for
		// as long as the rendezvous may live (until it ends: sendNotices).
		c.ExtendHandshake(s.lim.MaxLifetime - now.Sub(r.created))
	}
	cs.rvs[id] = struct{}{}
	s.metrics.opened.WithLabelValues(req.Role).Inc()
	return nil, nil
}

func (s *Service) opSend(_ context.Context, c *gateway.Call) (any, error) {
	var req Frame
	if err := wire.StrictUnmarshal(c.Body, &req); err != nil {
		return nil, s.refuse(OpSend, wire.Errorf(wire.CodeBadRequest, "link.send body: %v", err))
	}
	if len(req.Frame) == 0 {
		return nil, s.refuse(OpSend, wire.Errorf(wire.CodeBadRequest, "empty link frame"))
	}
	if len(req.Frame) > s.lim.MaxFrameBytes {
		return nil, s.refuse(OpSend, wire.Errorf(wire.CodeTooLarge, "link frame of %d bytes; the limit is %d", len(req.Frame), s.lim.MaxFrameBytes))
	}
	now := s.now()
	var ns []notice
	defer func() { sendNotices(ns) }()
	s.mu.Lock()
	r := s.lookup(string(req.Rendezvous), now, &ns)
	var peer *side
	switch {
	case r == nil:
	case r.host.connID == c.ConnID:
		peer = r.join
	case r.join != nil && r.join.connID == c.ConnID:
		peer = r.host
	default:
		r = nil // not a side of it: as if it did not exist
	}
	if r == nil {
		s.mu.Unlock()
		return nil, s.refuse(OpSend, wire.Errorf(wire.CodeNotFound, "this connection has no such link rendezvous (expired, closed or never opened)"))
	}
	if peer == nil {
		s.mu.Unlock()
		return nil, s.refuse(OpSend, wire.Errorf(wire.CodeUnavailable, "the other device has not joined yet"))
	}
	if r.frames >= s.lim.MaxFrames {
		s.drop(r, "frames", &ns)
		s.mu.Unlock()
		return nil, s.refuse(OpSend, wire.Errorf(wire.CodeTooLarge, "the rendezvous carried its %d frames and is closed", s.lim.MaxFrames))
	}
	r.frames++
	r.active = now
	s.mu.Unlock()
	// Handlers of one connection run in order, so frames keep their order; the push does not block.
	if err := peer.push.Push(PushFrame, Frame{Rendezvous: req.Rendezvous, Frame: req.Frame}); err != nil {
		s.mu.Lock()
		if s.rvs[r.id] == r {
			s.drop(r, "peer_gone", &ns)
		}
		s.mu.Unlock()
		return nil, s.refuse(OpSend, wire.Errorf(wire.CodeUnavailable, "the other device is gone"))
	}
	s.metrics.frames.Inc()
	return nil, nil
}

// connClosed drops every rendezvous the connection took part in.
func (s *Service) connClosed(connID string) {
	var ns []notice
	s.mu.Lock()
	if cs := s.conns[connID]; cs != nil {
		for id := range cs.rvs {
			if r := s.rvs[id]; r != nil {
				s.drop(r, "disconnected", &ns)
			}
		}
		delete(s.conns, connID)
	}
	s.mu.Unlock()
	sendNotices(ns)
}

// metrics are the service's Prometheus metrics.
type metrics struct {
	opened  *prometheus.CounterVec
	refused *prometheus.CounterVec
	dropped *prometheus.CounterVec
	frames  prometheus.Counter
	live    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		opened: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "gridchat", Subsystem: "linkrelay",
			Name: "opened_total", Help: "Link rendezvous opened (host) and joined (join)."}, []string{"role"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "gridchat", Subsystem: "linkrelay",
			Name: "refused_total", Help: "Link operations refused, by operation and reason."}, []string{"op", "reason"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "gridchat", Subsystem: "linkrelay",
			Name: "dropped_total", Help: "Link rendezvous ended, by reason (expired, disconnected, frames, peer_gone)."}, []string{"reason"}),
		frames: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "gridchat", Subsystem: "linkrelay",
			Name: "frames_total", Help: "Link frames forwarded."}),
		live: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "gridchat", Subsystem: "linkrelay",
			Name: "rendezvous", Help: "Live link rendezvous."}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.opened, m.refused, m.dropped, m.frames, m.live} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}
