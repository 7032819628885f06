package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/iagon/gridchat/internal/streamset"
	"github.com/iagon/gridchat/wire"
)

// Limits bounds the delivery service. DefaultLimits gives the documented defaults (docs/PROTOCOL.md §8).
type Limits struct {
	// MaxCiphertext is the largest envelope ciphertext accepted from a client or a peer.
	MaxCiphertext int
	// MaxRecipients is the largest recipient list of one send.
	MaxRecipients int
	// Window is how many envelopes may await their outcome on one deliver stream, in each direction.
	Window int
	// AckTimeout bounds how long a pushed envelope waits for the device's acknowledgement.
	AckTimeout time.Duration
	// LookupTimeout bounds one presence lookup.
	LookupTimeout time.Duration
	// DialTimeout bounds opening a deliver stream to a peer.
	DialTimeout time.Duration
	// WriteTimeout bounds one write on a deliver stream.
	WriteTimeout time.Duration
	// LinkIdle closes an outbound deliver stream with nothing in flight for this long; an inbound stream
	// silent for LinkIdle+AckTimeout is cut.
	LinkIdle time.Duration
}

// DefaultLimits returns the default delivery limits.
func DefaultLimits() Limits {
	return Limits{
		MaxCiphertext: 64 << 10,
		MaxRecipients: 256,
		Window:        512,
		AckTimeout:    10 * time.Second,
		LookupTimeout: 5 * time.Second,
		DialTimeout:   5 * time.Second,
		WriteTimeout:  10 * time.Second,
		LinkIdle:      2 * time.Minute,
	}
}

func (l *Limits) fill() {
	d := DefaultLimits()
	if l.MaxCiphertext <= 0 {
		l.MaxCiphertext = d.MaxCiphertext
	}
	if l.MaxRecipients <= 0 {
		l.MaxRecipients = d.MaxRecipients
	}
	if l.Window <= 0 {
		l.Window = d.Window
	}
	if l.AckTimeout <= 0 {
		l.AckTimeout = d.AckTimeout
	}
	if l.LookupTimeout <= 0 {
		l.LookupTimeout = d.LookupTimeout
	}
	if l.DialTimeout <= 0 {
		l.DialTimeout = d.DialTimeout
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = d.WriteTimeout
	}
	if l.LinkIdle <= 0 {
		l.LinkIdle = d.LinkIdle
	}
}

// Location is where a device is connected: its gateway's peer ID and addresses.
type Location struct {
	Gateway peer.ID
	Addrs   []ma.Multiaddr
	// Superseded is set when a newer record of the device (online elsewhere, or offline from another gateway)
	// exists: the device vouched for this gateway only before it. Relay still delivers there, and also keeps a
	// copy in the mailbox.
	Superseded bool
}

// ErrNotOnline is returned by a Locator for a device with no current online presence.
var ErrNotOnline = errors.New("relay: device not online")

// Locator finds the gateways a device is connected to (Presence implements it).
type Locator interface {
	// Locations returns the device's gateways, the one named by its newest presence record first, or an error
	// wrapping ErrNotOnline when it has none.
	Locations(ctx context.Context, device wire.DeviceID) ([]Location, error)
}

// Mailbox stores envelopes for devices that are not online. Put returns once the envelope is durably stored,
// with the replicas' signed receipts (encoded, docs/PROTOCOL.md §5 Mailboxes), which reach the sender in its
// "send" result. A refusal the sender should see as such wraps ErrMailboxQuota, ErrMailboxFull,
// ErrMailboxTooLarge, ErrMailboxRevoked or ErrNotStored; any other error is reported as an internal failure.
type Mailbox interface {
	Put(ctx context.Context, env wire.Envelope) (receipts [][]byte, err error)
}

// Mailbox refusals, for a Mailbox to wrap so that the sender gets a clear status (see mailboxOutcome).
var (
	// ErrMailboxQuota: the recipient's mailbox holds as many envelopes from this sender as it allows.
	ErrMailboxQuota = errors.New("relay: mailbox sender quota exceeded")
	// ErrMailboxFull: the recipient's mailbox is full.
	ErrMailboxFull = errors.New("relay: mailbox full")
	// ErrMailboxTooLarge: the envelope exceeds the mailbox's size limit.
	ErrMailboxTooLarge = errors.New("relay: envelope too large for the mailbox")
	// ErrMailboxRevoked: the recipient device is revoked and its mailbox dropped.
	ErrMailboxRevoked = errors.New("relay: recipient device revoked")
	// ErrNotStored: fewer than the write quorum of replicas stored the envelope.
	ErrNotStored = errors.New("relay: envelope not stored by a write quorum")
)

// mailboxOutcome maps a failed mailbox put to the sender's status. Policy refusals come first: a put without
// quorum wraps the replicas' refusals, and "quota" says more than "not stored".
func mailboxOutcome(err error) Outcome {
	switch {
	case errors.Is(err, ErrMailboxQuota):
		return failed(wire.CodeQuota, wire.FailSenderQuota)
	case errors.Is(err, ErrMailboxFull):
		return failed(wire.CodeQuota, wire.FailMailboxFull)
	case errors.Is(err, ErrMailboxTooLarge):
		return failed(wire.CodeTooLarge, wire.FailTooLarge)
	case errors.Is(err, ErrMailboxRevoked):
		return failed(wire.CodeRevoked, wire.FailRevoked)
	case errors.Is(err, ErrNotStored):
		return failed(wire.CodeUnavailable, wire.FailNotStored)
	}
	return failed(wire.CodeInternal, wire.FailInternal)
}

// Config configures a Service.
type Config struct {
	Host host.Host
	// ProtocolPrefix is the grid's protocol prefix (the node's protocol_prefix): the service speaks
	// DeliverProtocolFor(ProtocolPrefix). Empty means the default, DeliverProtocol.
	ProtocolPrefix protocol.ID
	Local          Local   // the devices connected to this node (required)
	Locator        Locator // presence lookups (required)
	Mailbox        Mailbox // nil until the mailbox service exists: offline devices then get wire.StatusOffline
	Limits         Limits
	// Metrics is the node's registry; nil registers nothing.
	Metrics prometheus.Registerer
	Logger  *slog.Logger
}

// Service delivers envelopes to devices anywhere on the grid.
type Service struct {
	host    host.Host
	proto   protocol.ID
	local   Local
	locator Locator
	mailbox Mailbox
	lim     Limits
	log     *slog.Logger
	metrics *metrics

	closing   chan struct{}
	ctx       context.Context // ends at Close: bounds mailbox puts of sends still finishing
	cancel    context.CancelFunc
	closeOnce sync.Once
	wg        sync.WaitGroup

	inbound streamset.Set // the deliver streams being served

	mu     sync.Mutex
	slots  map[peer.ID]*linkSlot
	closed bool
}

type linkSlot struct {
	mu sync.Mutex
	l  *link
}

// New starts the delivery service and registers the deliver stream handler on cfg.Host.
func New(cfg Config) (*Service, error) {
	if cfg.Host == nil || cfg.Local == nil || cfg.Locator == nil {
		return nil, errors.New("relay: new: Host, Local and Locator are required")
	}
	cfg.Limits.fill()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("relay: new: %w", err)
	}
	s := &Service{
		host: cfg.Host, proto: DeliverProtocolFor(cfg.ProtocolPrefix), local: cfg.Local, locator: cfg.Locator, mailbox: cfg.Mailbox, lim: cfg.Limits,
		log: cfg.Logger, metrics: m,
		closing: make(chan struct{}),
		slots:   make(map[peer.ID]*linkSlot),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	cfg.Host.SetStreamHandler(s.proto, s.inbound.Handler(s.serveDeliver))
	return s, nil
}

// Limits returns the service's limits with defaults filled in.
func (s *Service) Limits() Limits { return s.lim }

// Protocol returns the deliver stream protocol the service speaks.
func (s *Service) Protocol() protocol.ID { return s.proto }

// Close stops the service: it removes the stream handler, cuts every deliver stream and waits for its
// goroutines. It is idempotent.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		s.host.RemoveStreamHandler(s.proto)
		s.mu.Lock()
		s.closed = true
		close(s.closing)
		s.cancel()
		slots := make([]*linkSlot, 0, len(s.slots))
		for _, sl := range s.slots {
			slots = append(slots, sl)
		}
		s.mu.Unlock()
		s.inbound.Close()
		for _, sl := range slots {
			sl.mu.Lock()
			if sl.l != nil {
				sl.l.close()
			}
			sl.mu.Unlock()
		}
		s.wg.Wait()
	})
	return nil
}

// linkTo returns a live link to p, opening a deliver stream if needed.
func (s *Service) linkTo(ctx context.Context, loc Location) (*link, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errors.New("relay: closed")
	}
	sl := s.slots[loc.Gateway]
	if sl == nil {
		sl = &linkSlot{}
		s.slots[loc.Gateway] = sl
	}
	s.mu.Unlock()

	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.l != nil {
		select {
		case <-sl.l.done:
			sl.l.wg.Wait()
			sl.l = nil
		default:
			return sl.l, nil
		}
	}
	if len(loc.Addrs) > 0 {
		s.host.Peerstore().AddAddrs(loc.Gateway, loc.Addrs, peerstore.TempAddrTTL)
	}
	dctx, cancel := context.WithTimeout(ctx, s.lim.DialTimeout)
	defer cancel()
	st, err := s.host.NewStream(dctx, loc.Gateway, s.proto)
	if err != nil {
		return nil, fmt.Errorf("relay: open deliver stream to %s: %w", loc.Gateway, err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = st.Reset()
		return nil, errors.New("relay: closed")
	}
	s.mu.Unlock()
	// The connection manager must not trim a connection that carries a deliver link.
	tag := "gridchat-deliver"
	s.host.ConnManager().Protect(loc.Gateway, tag)
	sl.l = newLink(loc.Gateway, st, s.lim, s.log, func() { s.host.ConnManager().Unprotect(loc.Gateway, tag) })
	return sl.l, nil
}

// Pending is a dispatched send whose per-recipient outcomes are still arriving.
type Pending struct {
	s       *Service
	env     wire.Envelope
	devices []wire.DeviceID

	mu   sync.Mutex
	outs []Outcome
	// keep marks recipients delivered through a superseded gateway (Location.Superseded): their envelope also
	// goes to the mailbox.
	keep []bool
	left int                     // outcomes still to come, plus one until Notify is called
	done func(wire.SendResponse) // set by Notify
}

// settle records recipient i's outcome (i < 0 is Notify's own count), and whether it came from a superseded
// gateway, and finishes the send after the last one.
func (p *Pending) settle(i int, o Outcome, superseded bool) {
	p.mu.Lock()
	if i >= 0 {
		p.outs[i] = o
		p.keep[i] = superseded && o.Status == wire.StatusDelivered
	}
	p.left--
	last := p.left == 0
	p.mu.Unlock()
	if last {
		p.finish()
	}
}

// Dispatch validates a send from the sender device and queues the envelope for every recipient, in recipient
// order, before it returns: two sends dispatched one after the other from the same goroutine reach every
// recipient in that order (except an envelope retried on another of the device's gateways, which may arrive
// after later ones). It blocks while a deliver window is full (backpressure), within ctx. The outcomes
// are collected with Pending.Notify or Pending.Wait. A returned error is a *wire.Error for the client.
func (s *Service) Dispatch(ctx context.Context, sender wire.DeviceID, req *wire.SendRequest) (*Pending, error) {
	msgID, devices, err := req.Validate(s.lim.MaxCiphertext, s.lim.MaxRecipients)
	if err != nil {
		return nil, err
	}
	p := &Pending{s: s, devices: devices, outs: make([]Outcome, len(devices)),
		keep: make([]bool, len(devices)), left: len(devices) + 1}
	p.env = wire.Envelope{MessageID: msgID, Sender: sender, Ciphertext: req.Ciphertext}

	// Presence lookups of remote devices run in parallel (one alone runs here); queueing then happens in
	// recipient order.
	locs := make([][]Location, len(devices))
	lerrs := make([]error, len(devices))
	var remote []int
	for i, d := range devices {
		if !s.local.Connected(d) {
			remote = append(remote, i)
		}
	}
	lookup := func(i int) {
		lctx, cancel := context.WithTimeout(ctx, s.lim.LookupTimeout)
		defer cancel()
		locs[i], lerrs[i] = s.locator.Locations(lctx, devices[i])
	}
	if len(remote) == 1 {
		lookup(remote[0])
	} else if len(remote) > 1 {
		var wg sync.WaitGroup
		for _, i := range remote {
			wg.Go(func() { lookup(i) })
		}
		wg.Wait()
	}

	for i, d := range devices {
		env := p.env
		env.Recipient = d
		s.metrics.sent.Inc()
		switch {
		case lerrs[i] != nil:
			if !errors.Is(lerrs[i], ErrNotOnline) {
				s.log.Debug("relay: presence lookup failed", "device", fmt.Sprintf("%x", d[:8]), "err", lerrs[i])
			}
			p.settle(i, Outcome{Status: wire.StatusOffline}, false)
		case len(locs[i]) == 0: // connected here
			s.pushLocal(env, func(o Outcome) { s.elsewhere(env, o, func(o Outcome, sup bool) { p.settle(i, o, sup) }) })
		default:
			s.attempt(ctx, false, env, locs[i], func(o Outcome, superseded bool) { p.settle(i, o, superseded) })
		}
	}
	return p, nil
}

// pushLocal pushes env to the recipient's connections on this node; done gets the outcome.
func (s *Service) pushLocal(env wire.Envelope, done func(Outcome)) {
	if notify, ok := s.local.(notifyingLocal); ok {
		notify.PushNotify(env, done)
		return
	}
	s.await(s.local.Push(env), done)
}

// elsewhere finishes a push to a device connected to this node with outcome o: when the device turned out not to
// be here after all (offline, or gone before it acknowledged), its other gateways are looked up and tried, from
// a goroutine of the service; otherwise, or when it has none, done gets o.
func (s *Service) elsewhere(env wire.Envelope, o Outcome, done func(Outcome, bool)) {
	if !tryElsewhere(o) || !s.track() {
		done(o, false)
		return
	}
	go func() {
		defer s.wg.Done()
		lctx, cancel := context.WithTimeout(s.ctx, s.lim.LookupTimeout)
		locs, err := s.locator.Locations(lctx, env.Recipient)
		cancel()
		self := s.host.ID()
		locs = slices.DeleteFunc(slices.Clone(locs), func(l Location) bool { return l.Gateway == self })
		if err != nil || len(locs) == 0 {
			done(o, false)
			return
		}
		s.metrics.retried.WithLabelValues(retryReason(o)).Inc()
		actx, cancel := context.WithTimeout(s.ctx, s.lim.DialTimeout+s.lim.WriteTimeout)
		defer cancel()
		s.attempt(actx, true, env, locs, done)
	}()
}

// attempt delivers env on the first of the recipient's gateways locs (this node's own socket table when the
// gateway is this node, a deliver stream otherwise) and calls done with the outcome, and whether it came from
// another node named only by a superseded record. When the device turns out not to be there (offline, gone,
// or its gateway unreachable) and locs names another gateway, the envelope is tried there next, from a
// goroutine of the service, and done gets that attempt's outcome instead. ctx is the sender's request (its
// end cancels the send) unless retry is set: then it is the service's own, bounded.
func (s *Service) attempt(ctx context.Context, retry bool, env wire.Envelope, locs []Location, done func(Outcome, bool)) {
	loc := locs[0]
	superseded := loc.Superseded && loc.Gateway != s.host.ID()
	next := func(o Outcome) {
		if len(locs) == 1 || !tryElsewhere(o) || !s.track() {
			done(o, superseded)
			return
		}
		s.metrics.retried.WithLabelValues(retryReason(o)).Inc()
		go func() {
			defer s.wg.Done()
			actx, cancel := context.WithTimeout(s.ctx, s.lim.DialTimeout+s.lim.WriteTimeout)
			defer cancel()
			s.attempt(actx, true, env, locs[1:], done)
		}()
	}
	if loc.Gateway == s.host.ID() {
		s.pushLocal(env, next)
		return
	}
	l, err := s.linkTo(ctx, loc)
	if err == nil {
		err = l.Enqueue(ctx, env, next)
	}
	if err == nil {
		return
	}
	if ctx.Err() != nil && (!retry || s.ctx.Err() != nil) {
		// The sender's request ended, or the service is closing: nothing more is tried.
		done(failed(wire.CodeUnavailable, wire.FailCancelled), false)
		return
	}
	s.log.Debug("relay: deliver to gateway failed", "gateway", loc.Gateway, "err", err)
	next(failed(wire.CodeUnavailable, wire.FailUnreachable))
}

// tryElsewhere reports whether an envelope whose delivery through one of the recipient's gateways ended with o
// goes on to its next gateway: the device was not connected there, its connection ended before it
// acknowledged, or the gateway could not be reached. An acknowledgement timeout does not: the device may hold
// the envelope, and the mailbox takes it (toMailbox).
func tryElsewhere(o Outcome) bool {
	if o.Status == wire.StatusOffline {
		return true
	}
	return o.Status == wire.StatusFailed && (o.Reason == wire.FailGone || o.Reason == wire.FailUnreachable)
}

func retryReason(o Outcome) string {
	if o.Status == wire.StatusOffline {
		return "offline"
	}
	return o.Reason
}

// await calls done with what ch delivers, from a goroutine the service owns (for a Local without PushNotify).
func (s *Service) await(ch <-chan Outcome, done func(Outcome)) {
	if !s.track() {
		done(failed(wire.CodeUnavailable, wire.FailUnreachable))
		return
	}
	go func() {
		defer s.wg.Done()
		select {
		case o := <-ch:
			done(o)
		case <-s.closing:
			done(failed(wire.CodeUnavailable, wire.FailUnreachable))
		}
	}()
}

// track adds a goroutine to the service's wait group unless the service is closed.
func (s *Service) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// Notify calls done once with the response for the sender when every recipient's outcome is known: at once if
// they are, else from the goroutine that settles the last one. Devices found offline, and devices whose live
// delivery failed as "gone", "ack_timeout" or "unreachable", go to the mailbox first (in a goroutine of the
// service) and get its status; without a mailbox their status is wire.StatusOffline or that failure. done must
// not block.
// Notify or Wait is called once per Pending.
func (p *Pending) Notify(done func(wire.SendResponse)) {
	p.mu.Lock()
	p.done = done
	p.mu.Unlock()
	p.settle(-1, Outcome{}, false)
}

// Wait collects every recipient's outcome and returns the response for the sender. When ctx ends first, every
// recipient is reported cancelled.
func (p *Pending) Wait(ctx context.Context) wire.SendResponse {
	ch := make(chan wire.SendResponse, 1)
	p.Notify(func(r wire.SendResponse) { ch <- r })
	select {
	case r := <-ch:
		return r
	case <-ctx.Done():
		resp := wire.SendResponse{Results: make([]wire.RecipientResult, len(p.devices))}
		for i, d := range p.devices {
			resp.Results[i] = wire.RecipientResult{DeviceID: d[:], Status: wire.StatusFailed,
				Code: wire.CodeUnavailable, Reason: wire.FailCancelled}
		}
		return resp
	}
}

// toMailbox reports whether an envelope with live outcome o goes to the recipient's mailbox: the device was
// offline, or it was found online but the push did not complete (it disconnected first, did not acknowledge in
// time, or its gateway could not be reached), so the envelope may not have reached it. A device that did get
// the push sees the mailbox's copy as a duplicate by message ID (docs/PROTOCOL.md §7).
func toMailbox(o Outcome) bool {
	if o.Status == wire.StatusOffline {
		return true
	}
	if o.Status != wire.StatusFailed {
		return false
	}
	switch o.Reason {
	case wire.FailGone, wire.FailAckTimeout, wire.FailUnreachable:
		return true
	}
	return false
}

// finish builds the response once every outcome is in, storing the envelopes of recipients that were offline
// or whose live delivery failed (toMailbox) first.
func (p *Pending) finish() {
	store := false
	for _, o := range p.outs {
		store = store || toMailbox(o)
	}
	p.keepCopies()
	if !store || p.s.mailbox == nil {
		p.done(p.response(nil))
		return
	}
	if !p.s.track() {
		p.done(p.response(nil))
		return
	}
	go func() {
		defer p.s.wg.Done()
		p.done(p.response(p.s.ctx))
	}()
}

// keepCopies stores, in the background, the envelopes of recipients delivered through a superseded gateway
// (Location.Superseded) in their mailbox too: only the device's newest record vouches that it is still
// connected, and a node that withheld the device's offline record could otherwise acknowledge envelopes the
// device never gets. A device that did get the push sees the copy as a duplicate (its gateway's dedupe window
// answers the mailbox's push at once, or the client drops it by message ID).
func (p *Pending) keepCopies() {
	var copies []wire.Envelope
	for i, d := range p.devices {
		if p.keep[i] && p.s.mailbox != nil {
			env := p.env
			env.Recipient = d
			copies = append(copies, env)
		}
	}
	if len(copies) == 0 || !p.s.track() {
		return
	}
	go func() {
		defer p.s.wg.Done()
		for _, env := range copies {
			if _, err := p.s.mailbox.Put(p.s.ctx, env); err != nil {
				p.s.metrics.copies.WithLabelValues("failed").Inc()
				p.s.log.Debug("relay: mailbox copy failed", "err", err)
				continue
			}
			p.s.metrics.copies.WithLabelValues("stored").Inc()
		}
	}()
}

// response is the sender's response; with ctx set, the envelopes of recipients that toMailbox picks go to the
// mailbox first, and their status is the mailbox's ("stored" or its refusal).
func (p *Pending) response(ctx context.Context) wire.SendResponse {
	resp := wire.SendResponse{Results: make([]wire.RecipientResult, len(p.devices))}
	for i, d := range p.devices {
		o := p.outs[i]
		var receipts [][]byte
		if ctx != nil && toMailbox(o) {
			if o.Status == wire.StatusFailed {
				p.s.metrics.fallback.WithLabelValues(o.Reason).Inc()
			}
			env := p.env
			env.Recipient = d
			rc, err := p.s.mailbox.Put(ctx, env)
			if err != nil {
				p.s.log.Debug("relay: mailbox put failed", "err", err)
				o = mailboxOutcome(err)
				if ctx.Err() != nil {
					o = failed(wire.CodeUnavailable, wire.FailCancelled)
				}
			} else {
				o, receipts = Outcome{Status: wire.StatusStored}, rc
			}
		}
		p.s.metrics.observe(o)
		resp.Results[i] = wire.RecipientResult{DeviceID: d[:], Status: o.Status, Code: o.Code, Reason: o.Reason,
			Receipts: receipts}
	}
	return resp
}
