package mailbox

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	ds "github.com/ipfs/go-datastore"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/internal/streamset"
	"github.com/iagon/gridchat/relay/mailbox/receipt"
	"github.com/iagon/gridchat/wire"
)

// ProtocolID is the libp2p stream protocol of mailboxes in a grid with the default protocol prefix "/gridchat"
// (ProtocolIDFor).
const ProtocolID protocol.ID = "/gridchat/mailbox/1.0.0"

// ProtocolIDFor returns the mailbox stream protocol of the grid whose protocol prefix is prefix: prefix +
// "/mailbox/1.0.0". The empty prefix is the default one and gives ProtocolID.
func ProtocolIDFor(prefix protocol.ID) protocol.ID {
	if prefix == "" {
		return ProtocolID
	}
	return prefix + "/mailbox/1.0.0"
}

// keyLabel is not used by the key derivation (the key is exactly SHA-256 of the device ID); it is kept out on
// purpose so that any node can compute a mailbox's place from the device ID alone.

// Key returns the DHT key of dev's mailbox: SHA-256(device ID), 32 bytes. kad-dht places a key at
// SHA-256(key) in its keyspace, so the replicas are the R peers whose SHA-256(peer ID) is closest by XOR to
// SHA-256(SHA-256(device ID)).
func Key(dev wire.DeviceID) string {
	k := sha256.Sum256(dev[:])
	return string(k[:])
}

// Router finds the peers closest to a key (the grid's kad-dht implements it).
type Router interface {
	GetClosestPeers(ctx context.Context, key string) ([]peer.ID, error)
}

// Config configures a Service.
type Config struct {
	// Host is the node's libp2p host; its Ed25519 identity key signs receipts. Required.
	Host host.Host
	// ProtocolPrefix is the grid's protocol prefix (the node's protocol_prefix): the service speaks
	// ProtocolIDFor(ProtocolPrefix). Empty means the default, ProtocolID.
	ProtocolPrefix protocol.ID
	// Router finds the replicas of a mailbox. Required.
	Router Router
	// Datastore holds the mailboxes: give the service a namespace of its own. Required.
	Datastore ds.Batching
	// Limits; zero fields take their defaults.
	Limits Limits
	// Clock returns the current time. Default time.Now.
	Clock func() time.Time
	// Metrics is the node's registry; nil registers nothing.
	Metrics prometheus.Registerer
	// Logger; default discards.
	Logger *slog.Logger
	// DisableLoops turns off the timers (expiry, repair) and the reaction to peers joining and leaving, for
	// tests that drive Expire and Reconcile themselves.
	DisableLoops bool
}

// Service is one node's part of the mailbox system: a replica for the mailboxes it is close to, and a client of
// the replicas of any device its gateway serves.
type Service struct {
	host    host.Host
	proto   protocol.ID
	router  Router
	store   *Store
	lim     Limits
	now     func() time.Time
	log     *slog.Logger
	metrics *metrics
	key     ed25519.PrivateKey
	replay  *replayCache

	lastStamp atomic.Int64
	sessions  atomic.Int64

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	trigger   chan struct{}

	placeMu sync.Mutex
	place   map[wire.DeviceID]placement // recent put candidates, for PutEnvelope only

	inbound streamset.Set // the streams being served

	mu     sync.Mutex
	closed bool
	subs   map[wire.DeviceID]map[*subscriber]struct{}
}

// New starts the service: it registers the stream handler and, unless cfg.DisableLoops, the expiry and repair
// loops. The host's identity must be an Ed25519 key.
func New(cfg Config) (*Service, error) {
	if cfg.Host == nil || cfg.Router == nil || cfg.Datastore == nil {
		return nil, errors.New("mailbox: new: Host, Router and Datastore are required")
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	priv := cfg.Host.Peerstore().PrivKey(cfg.Host.ID())
	if priv == nil || priv.Type() != crypto.Ed25519 {
		return nil, errors.New("mailbox: new: the host's identity is not an Ed25519 key")
	}
	raw, err := priv.Raw()
	if err != nil || len(raw) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("mailbox: new: read host key: %v", err)
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("mailbox: new: metrics: %w", err)
	}
	lim := cfg.Limits.withDefaults()
	s := &Service{
		host: cfg.Host, proto: ProtocolIDFor(cfg.ProtocolPrefix), router: cfg.Router,
		store: NewStore(cfg.Datastore, lim), lim: lim, now: cfg.Clock,
		log: cfg.Logger, metrics: m, key: ed25519.PrivateKey(raw), replay: newReplayCache(lim.ReplayCacheSize),
		trigger: make(chan struct{}, 1),
		place:   make(map[wire.DeviceID]placement),
		subs:    make(map[wire.DeviceID]map[*subscriber]struct{}),
	}
	s.store.countExpired = func(n int) { m.expired.WithLabelValues(ReasonCount).Add(float64(n)) }
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if !cfg.DisableLoops {
		sub, err := cfg.Host.EventBus().Subscribe(new(event.EvtPeerConnectednessChanged))
		if err != nil {
			s.cancel()
			return nil, fmt.Errorf("mailbox: new: subscribe to peer events: %w", err)
		}
		s.wg.Go(func() { s.watchPeers(sub) })
		s.wg.Go(s.expiryLoop)
		s.wg.Go(s.repairLoop)
	}
	cfg.Host.SetStreamHandler(s.proto, s.inbound.Handler(s.handleStream))
	return s, nil
}

// Store returns the service's local store (for inspection; the service owns it).
func (s *Service) Store() *Store { return s.store }

// Limits returns the limits in force.
func (s *Service) Limits() Limits { return s.lim }

// Close stops the service: it removes the stream handler, cuts open streams, stops the loops and waits for
// every goroutine. It is idempotent.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		s.host.RemoveStreamHandler(s.proto)
		s.mu.Lock()
		s.closed = true
		for _, set := range s.subs {
			for sub := range set {
				sub.stop()
			}
		}
		s.mu.Unlock()
		s.cancel()
		// The handlers first: they may start goroutines on s.wg, which must be counted before s.wg.Wait.
		s.inbound.Close()
		s.wg.Wait()
	})
	return nil
}

// nextStamp returns a Unix-nanosecond stamp greater than every earlier one of this service.
func (s *Service) nextStamp() int64 {
	now := s.now().UnixNano()
	for {
		last := s.lastStamp.Load()
		next := max(now, last+1)
		if s.lastStamp.CompareAndSwap(last, next) {
			return next
		}
	}
}

// Replicas returns the R peers that keep dev's mailbox, closest first (possibly including this node).
func (s *Service) Replicas(ctx context.Context, dev wire.DeviceID) ([]peer.ID, error) {
	c, err := s.candidates(ctx, dev, s.lim.Replicas)
	return c, err
}

// lookupTimeout bounds the network lookup of a mailbox's closest peers; past it the routing table's view is
// used alone (a lookup can stall on peers that just died).
const lookupTimeout = 3 * time.Second

// tableRouter is implemented by a Router that also has a local routing table (kad-dht does).
type tableRouter interface {
	RoutingTable() *kb.RoutingTable
}

// candidates returns up to n peers closest to dev's mailbox key: the router's closest peers, the connected
// peers of the local routing table nearest to the key, and this node, sorted by XOR distance.
func (s *Service) candidates(ctx context.Context, dev wire.DeviceID, n int) ([]peer.ID, error) {
	key := Key(dev)
	target := kb.ConvertKey(key)
	all := []peer.ID{s.host.ID()}
	if tr, ok := s.router.(tableRouter); ok {
		for _, p := range tr.RoutingTable().NearestPeers(target, 2*n) {
			if s.host.Network().Connectedness(p) == network.Connected {
				all = append(all, p)
			}
		}
	}
	lctx, cancel := context.WithTimeout(ctx, min(lookupTimeout, s.lim.RequestTimeout))
	defer cancel()
	peers, err := s.router.GetClosestPeers(lctx, key)
	if err != nil {
		s.log.Debug("mailbox: closest peers lookup failed; using the routing table", "err", err)
	}
	all = append(all, peers...)
	seen := make(map[peer.ID]struct{}, len(all))
	uniq := all[:0]
	for _, p := range all {
		if _, ok := seen[p]; !ok && p != "" {
			seen[p] = struct{}{}
			uniq = append(uniq, p)
		}
	}
	sorted := kb.SortClosestPeers(uniq, target)
	if len(sorted) > n {
		sorted = sorted[:n]
	}
	return sorted, nil
}

// handleStream serves one incoming mailbox stream: a size cap and a deadline on the first frame, then one
// request. s.inbound tracks it for Close.
func (s *Service) handleStream(st network.Stream) {
	_ = st.SetDeadline(s.now().Add(s.lim.HandshakeTimeout))
	f, err := readFrame(st, s.maxFrame())
	if err != nil {
		s.metrics.refusal(errorf(StatusMalformed, "%v", err))
		_ = st.Reset()
		return
	}
	switch f.Type {
	case tPut:
		s.servePut(st, f)
	case tFetch:
		s.serveFetch(st, f)
	case tDelete:
		s.serveDelete(st, f)
	case tSync:
		s.serveSync(st, f)
	default:
		_ = writeFrame(st, errFrame(errorf(StatusMalformed, "unexpected frame type %d", f.Type)))
	}
	_ = st.Close()
}

func (s *Service) maxFrame() int { return max(s.lim.MaxEnvelopeBytes+frameOverhead, maxControlFrame) }

// localPut stores e here, signs the receipt and wakes the device's open fetch streams.
func (s *Service) localPut(ctx context.Context, e *Envelope) ([]byte, error) {
	kind, err := s.store.Put(ctx, e, s.now())
	if err != nil {
		s.metrics.refusal(err)
		return nil, err
	}
	if kind == Written {
		s.metrics.stored.Inc()
		s.notify(e)
	}
	r := receipt.Receipt{
		Replica:      []byte(s.host.ID()),
		Device:       e.Recipient,
		MessageID:    e.MessageID,
		EnvelopeHash: receipt.EnvelopeHash(e.MessageID, e.Sender, e.Recipient, e.Ciphertext),
		Time:         s.now(),
	}
	if err := receipt.Sign(&r, s.key); err != nil {
		return nil, fmt.Errorf("mailbox: put: %w", err)
	}
	return r.Encode(), nil
}

func (s *Service) servePut(st network.Stream, f *frame) {
	e, err := fromRec(f.Env)
	if err != nil {
		_ = writeFrame(st, errFrame(err))
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.lim.RequestTimeout)
	defer cancel()
	rc, err := s.localPut(ctx, &e)
	if err != nil {
		_ = writeFrame(st, errFrame(err))
		return
	}
	_ = writeFrame(st, &frame{Type: tPutResult, Receipt: rc})
}

// Stored is the outcome of a successful Put: receipts from at least a write quorum of distinct replicas.
type Stored struct {
	Receipts [][]byte  // encoded receipt.Receipt values, one per replica that wrote the envelope
	Replicas []peer.ID // the replicas that signed them, in the same order
	Stamp    int64     // the envelope's order stamp
}

// Put satisfies relay's Mailbox interface: PutEnvelope without the receipts.
func (s *Service) Put(ctx context.Context, env wire.Envelope) error {
	_, err := s.PutEnvelope(ctx, env)
	return err
}

// PutEnvelope stores env in its recipient's mailbox: it sends it to the R closest replicas in parallel,
// falling back to the next closest peers when one cannot be reached, and returns once every attempt has
// ended. It succeeds only with verified receipts from at least the write quorum of distinct replicas; otherwise
// the error wraps ErrNoQuorum and the replicas' refusals (ErrTooLarge, ErrSenderQuota, ErrMailboxFull,
// ErrRevoked, ...).
func (s *Service) PutEnvelope(ctx context.Context, env wire.Envelope) (*Stored, error) {
	if len(env.Ciphertext) > s.lim.MaxEnvelopeBytes {
		s.metrics.refusal(ErrTooLarge)
		return nil, errorf(StatusTooLarge, "ciphertext of %d bytes exceeds %d", len(env.Ciphertext), s.lim.MaxEnvelopeBytes)
	}
	e := Envelope{MessageID: env.MessageID, Sender: env.Sender, Recipient: env.Recipient, Stamp: s.nextStamp(),
		Ciphertext: env.Ciphertext}
	cands, err := s.putCandidates(ctx, e.Recipient)
	if err != nil {
		return nil, err
	}
	want := receipt.Expect{Device: e.Recipient, MessageID: e.MessageID,
		EnvelopeHash: receipt.EnvelopeHash(e.MessageID, e.Sender, e.Recipient, e.Ciphertext)}

	type result struct {
		p   peer.ID
		rc  []byte
		err error
	}
	results := make(chan result, len(cands))
	attempt := func(p peer.ID) {
		rc, err := s.putTo(ctx, p, &e)
		if err == nil {
			if _, verr := receipt.VerifyReceipts([][]byte{rc}, want, 1); verr != nil || !receiptFrom(rc, p) {
				err = fmt.Errorf("mailbox: put to %s: receipt does not verify: %v", p, verr)
			}
		}
		results <- result{p, rc, err}
	}
	next := 0
	inFlight := 0
	for ; next < len(cands) && next < s.lim.Replicas; next++ {
		go attempt(cands[next])
		inFlight++
	}
	out := &Stored{Stamp: e.Stamp}
	var refusals []error
	for inFlight > 0 {
		r := <-results
		inFlight--
		if r.err == nil {
			out.Receipts = append(out.Receipts, r.rc)
			out.Replicas = append(out.Replicas, r.p)
			continue
		}
		refusals = append(refusals, r.err)
		// A refusal by policy (quota, size, revoked, expired) is the mailbox's answer: asking further peers
		// would only get around it. An unreachable or failing replica is replaced by the next closest peer.
		switch statusOf(r.err) {
		case StatusInternal, StatusBusy, StatusNotReplica:
			if next < len(cands) {
				go attempt(cands[next])
				next++
				inFlight++
			}
		}
	}
	if len(out.Receipts) < s.lim.WriteQuorum {
		return nil, fmt.Errorf("%w: %d of %d replicas stored %x: %w", ErrNoQuorum, len(out.Receipts),
			s.lim.WriteQuorum, e.MessageID[:4], errors.Join(refusals...))
	}
	return out, nil
}

// placement is a cached candidate list of one mailbox.
type placement struct {
	peers   []peer.ID
	expires time.Time
}

// placementTTL is how long PutEnvelope reuses a mailbox's candidates; a replica that died since is skipped by
// the fallback to the next candidate.
const (
	placementTTL      = 5 * time.Second
	maxPlacementCache = 4096
)

// putCandidates returns the R+2 closest peers of dev's mailbox, from a short-lived cache so that a burst of
// puts to one device does not run one DHT lookup each.
func (s *Service) putCandidates(ctx context.Context, dev wire.DeviceID) ([]peer.ID, error) {
	now := time.Now()
	s.placeMu.Lock()
	if p, ok := s.place[dev]; ok && now.Before(p.expires) {
		s.placeMu.Unlock()
		return p.peers, nil
	}
	s.placeMu.Unlock()
	cands, err := s.candidates(ctx, dev, s.lim.Replicas+2)
	if err != nil {
		return nil, err
	}
	s.placeMu.Lock()
	if len(s.place) >= maxPlacementCache {
		for k, p := range s.place {
			if !now.Before(p.expires) || len(s.place) >= maxPlacementCache {
				delete(s.place, k)
			}
		}
	}
	s.place[dev] = placement{peers: cands, expires: now.Add(placementTTL)}
	s.placeMu.Unlock()
	return cands, nil
}

// receiptFrom reports whether the encoded receipt names replica p.
func receiptFrom(rc []byte, p peer.ID) bool {
	r, err := receipt.Decode(rc)
	return err == nil && string(r.Replica) == string(p)
}

// putTo stores e on replica p (this node directly, others over a stream) and returns p's receipt.
func (s *Service) putTo(ctx context.Context, p peer.ID, e *Envelope) ([]byte, error) {
	if p == s.host.ID() {
		return s.localPut(ctx, e)
	}
	ctx, cancel := context.WithTimeout(ctx, s.lim.RequestTimeout)
	defer cancel()
	st, err := s.host.NewStream(ctx, p, s.proto)
	if err != nil {
		return nil, errorf(StatusInternal, "open stream to %s: %v", p, err)
	}
	defer st.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = st.SetDeadline(dl)
	}
	if err := writeFrame(st, &frame{Type: tPut, Env: toRec(e)}); err != nil {
		_ = st.Reset()
		return nil, errorf(StatusInternal, "write to %s: %v", p, err)
	}
	f, err := readFrame(st, maxControlFrame)
	if err != nil {
		_ = st.Reset()
		return nil, errorf(StatusInternal, "read from %s: %v", p, err)
	}
	if err := f.err(); err != nil {
		return nil, err
	}
	if f.Type != tPutResult || len(f.Receipt) == 0 {
		return nil, errorf(StatusInternal, "%s answered frame type %d", p, f.Type)
	}
	return f.Receipt, nil
}

// SignedRequest is a device's signed request to its mailbox, as a client sends it to its gateway: the
// device's public keys (e2ee DevicePublic encoding), the e2ee SignedRequest encoding, and the body it signs.
type SignedRequest struct {
	DevicePublic []byte
	Request      []byte
	Body         []byte
}

// NewFetchRequest signs a fetch of dk's mailbox (purpose "mailbox-fetch"). With follow, the replicas keep the
// stream open and push envelopes that arrive later.
func NewFetchRequest(dk *e2ee.DeviceKeys, follow bool, now time.Time) (SignedRequest, error) {
	id := dk.ID()
	body := cb.marshal(&fetchBody{Device: id[:], Follow: follow})
	return signRequest(dk, PurposeFetch, body, now)
}

// NewDeleteRequest signs the deletion of ids from dk's mailbox (purpose "mailbox-delete").
func NewDeleteRequest(dk *e2ee.DeviceKeys, ids []wire.MessageID, now time.Time) (SignedRequest, error) {
	id := dk.ID()
	body := cb.marshal(&deleteBody{Device: id[:], IDs: idBytes(ids)})
	return signRequest(dk, PurposeDelete, body, now)
}

func signRequest(dk *e2ee.DeviceKeys, purpose string, body []byte, now time.Time) (SignedRequest, error) {
	q, err := e2ee.SignRequest(dk, purpose, body, now)
	if err != nil {
		return SignedRequest{}, fmt.Errorf("mailbox: sign request: %w", err)
	}
	pub := dk.Public()
	return SignedRequest{DevicePublic: pub.Encode(), Request: q.Encode(), Body: body}, nil
}

// verify checks a signed request for purpose on this replica: the signature under the device's key (whose hash
// is the device ID), freshness, the replay cache and revocation. It returns the device.
func (s *Service) verify(ctx context.Context, purpose string, devPub, req, body []byte) (wire.DeviceID, error) {
	var dev wire.DeviceID
	dp, err := e2ee.DecodeDevicePublic(devPub)
	if err != nil {
		return dev, errorf(StatusMalformed, "device public key: %v", err)
	}
	q, err := e2ee.DecodeSignedRequest(req)
	if err != nil {
		return dev, errorf(StatusMalformed, "signed request: %v", err)
	}
	now := s.now()
	if err := q.Verify(dp, purpose, body, now, s.lim.MaxClockSkew); err != nil {
		if errors.Is(err, e2ee.ErrExpired) {
			return dev, errorf(StatusStale, "%v", err)
		}
		return dev, errorf(StatusUnauthorized, "%v", err)
	}
	dev = wire.DeviceID(q.Device)
	if revoked, err := s.store.Revoked(ctx, dev); err != nil {
		return dev, errorf(StatusInternal, "%v", err)
	} else if revoked {
		return dev, errorf(StatusRevoked, "device %s is revoked", fmtDev(dev))
	}
	if err := s.replay.check(dev, q.Nonce, q.Time.Add(2*s.lim.MaxClockSkew), now); err != nil {
		return dev, err
	}
	return dev, nil
}

func (s *Service) verifyDelete(ctx context.Context, r SignedRequest) (wire.DeviceID, []wire.MessageID, error) {
	dev, err := s.verify(ctx, PurposeDelete, r.DevicePublic, r.Request, r.Body)
	if err != nil {
		return dev, nil, err
	}
	var b deleteBody
	if err := cb.dec.Unmarshal(r.Body, &b); err != nil {
		return dev, nil, errorf(StatusMalformed, "delete body: %v", err)
	}
	if string(b.Device) != string(dev[:]) {
		return dev, nil, errorf(StatusUnauthorized, "body names another device")
	}
	ids, err := parseIDs(b.IDs, maxAckBatch)
	return dev, ids, err
}

func (s *Service) serveDelete(st network.Stream, f *frame) {
	ctx, cancel := context.WithTimeout(s.ctx, s.lim.RequestTimeout)
	defer cancel()
	n, err := s.localDelete(ctx, SignedRequest{DevicePublic: f.DevicePublic, Request: f.Request, Body: f.Body})
	if err != nil {
		_ = writeFrame(st, errFrame(err))
		return
	}
	_ = writeFrame(st, &frame{Type: tDeleteResult, Count: uint64(n)})
}

func (s *Service) localDelete(ctx context.Context, r SignedRequest) (int, error) {
	dev, ids, err := s.verifyDelete(ctx, r)
	if err != nil {
		s.metrics.refusal(err)
		return 0, err
	}
	n, err := s.store.Delete(ctx, dev, ids, s.now())
	if err != nil {
		return 0, errorf(StatusInternal, "%v", err)
	}
	s.metrics.deleted.Add(float64(n))
	return n, nil
}

// Delete deletes envelopes from a device's mailbox on every replica, with a request the device signed
// (NewDeleteRequest). It returns how many envelopes the replicas removed in all. It fails only if no replica
// accepted the request; replicas that missed it catch up by anti-entropy.
func (s *Service) Delete(ctx context.Context, r SignedRequest) (int, error) {
	var b deleteBody
	if err := cb.dec.Unmarshal(r.Body, &b); err != nil || len(b.Device) != wire.DeviceIDSize {
		return 0, errorf(StatusMalformed, "delete body")
	}
	reps, err := s.Replicas(ctx, wire.DeviceID(b.Device))
	if err != nil {
		return 0, err
	}
	var (
		mu    sync.Mutex
		total int
		ok    int
		errs  []error
		wg    sync.WaitGroup
	)
	for _, p := range reps {
		wg.Go(func() {
			n, err := s.deleteAt(ctx, p, r)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			ok++
			total += n
		})
	}
	wg.Wait()
	if ok == 0 {
		return 0, fmt.Errorf("mailbox: delete: %w", errors.Join(errs...))
	}
	return total, nil
}

func (s *Service) deleteAt(ctx context.Context, p peer.ID, r SignedRequest) (int, error) {
	if p == s.host.ID() {
		return s.localDelete(ctx, r)
	}
	ctx, cancel := context.WithTimeout(ctx, s.lim.RequestTimeout)
	defer cancel()
	st, err := s.host.NewStream(ctx, p, s.proto)
	if err != nil {
		return 0, errorf(StatusInternal, "open stream to %s: %v", p, err)
	}
	defer st.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = st.SetDeadline(dl)
	}
	if err := writeFrame(st, &frame{Type: tDelete, DevicePublic: r.DevicePublic, Request: r.Request, Body: r.Body}); err != nil {
		_ = st.Reset()
		return 0, errorf(StatusInternal, "write: %v", err)
	}
	f, err := readFrame(st, maxControlFrame)
	if err != nil {
		_ = st.Reset()
		return 0, errorf(StatusInternal, "read: %v", err)
	}
	if err := f.err(); err != nil {
		return 0, err
	}
	if f.Type != tDeleteResult {
		return 0, errorf(StatusInternal, "answered frame type %d", f.Type)
	}
	return int(f.Count), nil
}

// Revoke drops dev's mailbox on this node and refuses its envelopes from now on. Every node calls it when the
// directory announces the revocation, so every replica drops its copy.
func (s *Service) Revoke(ctx context.Context, dev wire.DeviceID) error {
	if err := s.store.Drop(ctx, dev, s.now()); err != nil {
		return err
	}
	s.mu.Lock()
	for sub := range s.subs[dev] {
		sub.stop()
	}
	s.mu.Unlock()
	return nil
}

// Expire runs one expiry sweep now (the expiry loop calls it every ExpiryInterval).
func (s *Service) Expire(ctx context.Context) (ExpireResult, error) {
	r, err := s.store.Expire(ctx, s.now())
	s.metrics.expired.WithLabelValues(ReasonTTL).Add(float64(r.Expired))
	return r, err
}

func (s *Service) expiryLoop() {
	t := time.NewTicker(s.lim.ExpiryInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			if _, err := s.Expire(s.ctx); err != nil && s.ctx.Err() == nil {
				s.log.Warn("mailbox: expiry sweep", "err", err)
			}
		}
	}
}

// watchPeers triggers a repair round when a peer connects or disconnects: the set of closest nodes of some
// mailbox may have changed, or a replica came back and needs to catch up.
func (s *Service) watchPeers(sub event.Subscription) {
	defer sub.Close()
	for {
		select {
		case <-s.ctx.Done():
			return
		case _, ok := <-sub.Out():
			if !ok {
				return
			}
			select {
			case s.trigger <- struct{}{}:
			default:
			}
		}
	}
}

func (s *Service) repairLoop() {
	t := time.NewTicker(s.lim.RepairInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		case <-s.trigger:
			// Let a burst of connection events settle before one round.
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
		if _, err := s.Reconcile(s.ctx); err != nil && s.ctx.Err() == nil {
			s.log.Debug("mailbox: repair round", "err", err)
		}
	}
}

// discard reads what remains of a stream so the peer's writes complete.
func discard(r io.Reader) { _, _ = io.Copy(io.Discard, io.LimitReader(r, maxControlFrame)) }
