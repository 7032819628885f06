package keyregistry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"
	kb "github.com/libp2p/go-libp2p-kbucket"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/iagon/gridchat/chain"
	"github.com/iagon/gridchat/e2ee"
)

// Router is the part of the grid's DHT the directory uses (*dht.DHT
// satisfies it).
type Router interface {
	PutValue(ctx context.Context, key string, value []byte, opts ...routing.Option) error
	SearchValue(ctx context.Context, key string, opts ...routing.Option) (<-chan []byte, error)
}

// Publisher appends a user-signed statement to the key publication log and
// returns its receipt (chain.Adapter satisfies it).
type Publisher interface {
	Publish(ctx context.Context, r chain.Record) (*chain.Receipt, error)
}

// Topic is the gossipsub topic on which directory records are announced, in a grid with the default protocol
// prefix "/gridchat" (TopicFor).
const Topic = "/gridchat/directory/1"

// TopicFor returns the directory topic of the grid whose protocol prefix is prefix: prefix + "/directory/1".
// The empty prefix is the default one and gives Topic.
func TopicFor(prefix protocol.ID) string {
	if prefix == "" {
		return Topic
	}
	return string(prefix) + "/directory/1"
}

// Limits are the directory's limits and timings, with defaults from
// DefaultLimits.
type Limits struct {
	// NonceTTL is how long a registration nonce is valid.
	NonceTTL time.Duration
	// MaxNonces caps the nonces remembered (live and used).
	MaxNonces int
	// NoncesPerConn caps the live nonces of one connection.
	NoncesPerConn int
	// CacheSize caps the verified accounts kept in memory.
	CacheSize int
	// CacheTTL is how long a cached account is served before it is fetched
	// again (gossip refreshes it sooner).
	CacheTTL time.Duration
	// LookupQuorum is how many DHT answers a lookup waits for.
	LookupQuorum int
	// LookupTimeout bounds one DHT lookup.
	LookupTimeout time.Duration
	// PutTimeout bounds storing one record in the DHT.
	PutTimeout time.Duration
	// RepublishInterval is how often held records are stored again; it must
	// be well below the DHT's record age (36 h).
	RepublishInterval time.Duration
	// PublishTimeout bounds publishing one statement to the log (the log
	// waits for its witnesses).
	PublishTimeout time.Duration
	// ReceiptRetryInterval is how often statements of held records that
	// have no receipt yet are published again (see UpgradeReceipts).
	ReceiptRetryInterval time.Duration
}

// DefaultLimits returns the default limits.
func DefaultLimits() Limits {
	return Limits{
		NonceTTL:          30 * time.Second,
		MaxNonces:         100_000,
		NoncesPerConn:     4,
		CacheSize:         10_000,
		CacheTTL:          5 * time.Minute,
		LookupQuorum:      3,
		LookupTimeout:     10 * time.Second,
		PutTimeout:        20 * time.Second,
		RepublishInterval: 12 * time.Hour,
		PublishTimeout:    15 * time.Second,
		// A lonely node (no witnesses yet) retries often, so the records it
		// accepted carry receipts soon after its first peers arrive.
		ReceiptRetryInterval: 30 * time.Second,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.NonceTTL <= 0 {
		l.NonceTTL = d.NonceTTL
	}
	if l.MaxNonces <= 0 {
		l.MaxNonces = d.MaxNonces
	}
	if l.NoncesPerConn <= 0 {
		l.NoncesPerConn = d.NoncesPerConn
	}
	if l.CacheSize <= 0 {
		l.CacheSize = d.CacheSize
	}
	if l.CacheTTL <= 0 {
		l.CacheTTL = d.CacheTTL
	}
	if l.LookupQuorum <= 0 {
		l.LookupQuorum = d.LookupQuorum
	}
	if l.LookupTimeout <= 0 {
		l.LookupTimeout = d.LookupTimeout
	}
	if l.PutTimeout <= 0 {
		l.PutTimeout = d.PutTimeout
	}
	if l.RepublishInterval <= 0 {
		l.RepublishInterval = d.RepublishInterval
	}
	if l.PublishTimeout <= 0 {
		l.PublishTimeout = d.PublishTimeout
	}
	if l.ReceiptRetryInterval <= 0 {
		l.ReceiptRetryInterval = d.ReceiptRetryInterval
	}
	return l
}

// Config configures a Service.
type Config struct {
	// Router is the grid's DHT. Required.
	Router Router
	// Datastore keeps the records this node registered or updated, so it can
	// republish them after a restart. Required; give it a namespace of its own.
	Datastore ds.Datastore
	// PubSub carries announcements on TopicFor(ProtocolPrefix) and messaging
	// keys on KeyTopicFor(ProtocolPrefix). Optional: without it caches
	// refresh only by TTL.
	PubSub *pubsub.PubSub
	// ProtocolPrefix is the grid's protocol prefix, which names the topics.
	// Empty is the default ("/gridchat").
	ProtocolPrefix protocol.ID
	// Publisher is the key publication log. Optional: without it records
	// carry no receipts. When a statement cannot be published (the log finds
	// no witness quorum, say on a node that is alone), the record is stored
	// without its receipt unless Validator.RequireReceipts is set, and the
	// statement is published again every Limits.ReceiptRetryInterval until
	// its receipt is added (UpgradeReceipts).
	Publisher Publisher
	// OnRevoked, if set, is called with every device that an accepted chain
	// revokes: a local update, a gossiped announcement (even of an account
	// this node does not cache) or a lookup that brings a newer chain. It
	// may be called more than once for one device (a node that first sees
	// an account learns all its past revocations). It runs on the
	// directory's goroutines and must not block for long.
	OnRevoked func(e2ee.DeviceID)
	// GatewayID is what registration proofs are bound to: this node's peer
	// ID in binary form. Required.
	GatewayID []byte
	// Validator must match the DHT's validators (same clock and lifetimes).
	Validator ValidatorConfig
	// Limits are the limits and timings; zero fields take defaults.
	Limits Limits
	// Logger receives the service's logs. Default: discard.
	Logger *slog.Logger
	// Registerer receives the service's metrics. Default: none.
	Registerer prometheus.Registerer
}

// NonceGrant is what a client gets to register a first device: the nonce to
// sign and, when it named its device, the key challenge sealed to its
// messaging key.
type NonceGrant struct {
	Nonce     Nonce
	Expires   time.Time
	Challenge []byte
}

// RegisterRequest registers a first device: the account's genesis chain, the
// device's registration proof over the nonce, and its answer to the key
// challenge.
type RegisterRequest struct {
	Nonce  Nonce
	Chain  []byte
	Proof  []byte
	Answer []byte
}

// regGrant is what the nonce store keeps for a registration nonce.
type regGrant struct {
	device    e2ee.DevicePublic
	challenge *e2ee.KeyChallenge
}

// Service is the key directory of one node. Its methods are safe for
// concurrent use.
type Service struct {
	cfg  Config
	lim  Limits
	log  *slog.Logger
	ver  *verifier
	vals map[string]interface {
		open(string, []byte) (*held, error)
	}
	nonces *nonceStore
	m      *metrics

	accounts *lru[e2ee.AccountID, *held]
	devices  *lru[e2ee.DeviceID, e2ee.AccountID]
	names    *lru[string, e2ee.AccountID]

	heldMu sync.Mutex // serialises read-modify-write of held records

	keys keyDir // signed messaging keys (keys.go)

	topic *pubsub.Topic
	sub   *pubsub.Subscription

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// heldPrefix is the datastore prefix of the records this node republishes.
var heldPrefix = ds.NewKey("/held")

// New starts the directory service: it joins the directory topic (if PubSub
// is set) and starts the republish timer. Close stops it.
func New(cfg Config) (*Service, error) {
	if cfg.Router == nil || cfg.Datastore == nil {
		return nil, errors.New("keyregistry: new: Router and Datastore are required")
	}
	if len(cfg.GatewayID) == 0 {
		return nil, errors.New("keyregistry: new: GatewayID is required")
	}
	cfg.Validator = cfg.Validator.withDefaults()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	lim := cfg.Limits.withDefaults()
	ver := newVerifier(cfg.Validator)
	now := cfg.Validator.Now
	s := &Service{
		cfg:    cfg,
		lim:    lim,
		log:    cfg.Logger,
		ver:    ver,
		nonces: newNonceStore(now, lim.NonceTTL, lim.MaxNonces, lim.NoncesPerConn),
		vals: map[string]interface {
			open(string, []byte) (*held, error)
		}{
			NSAccount:  accountValidator{ver},
			NSDevice:   deviceValidator{ver},
			NSUsername: usernameValidator{v: ver},
		},
		accounts: newLRU[e2ee.AccountID, *held](lim.CacheSize, lim.CacheTTL, now),
		devices:  newLRU[e2ee.DeviceID, e2ee.AccountID](4*lim.CacheSize, lim.CacheTTL, now),
		names:    newLRU[string, e2ee.AccountID](lim.CacheSize, lim.CacheTTL, now),
	}
	var err error
	if s.m, err = newMetrics(cfg.Registerer); err != nil {
		return nil, fmt.Errorf("keyregistry: new: %w", err)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if cfg.PubSub != nil {
		t, sub, err := joinTopic(cfg.PubSub, TopicFor(cfg.ProtocolPrefix), s.validateAnnouncement)
		if err != nil {
			s.cancel()
			return nil, fmt.Errorf("keyregistry: new: %w", err)
		}
		s.topic, s.sub = t, sub
		s.wg.Go(s.gossipLoop)
	}
	if err := s.startKeys(); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("keyregistry: new: %w", err)
	}
	s.wg.Go(s.republishLoop)
	if cfg.Publisher != nil {
		s.wg.Go(s.receiptRetryLoop)
	}
	return s, nil
}

// Close stops gossip and republishing and waits for them. It is safe to call
// more than once.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		if s.sub != nil {
			s.sub.Cancel()
		}
		s.wg.Wait()
		s.stopKeys()
		if s.topic != nil {
			_ = s.cfg.PubSub.UnregisterTopicValidator(TopicFor(s.cfg.ProtocolPrefix))
			_ = s.topic.Close()
		}
	})
	return nil
}

func (s *Service) now() time.Time { return s.cfg.Validator.Now() }

// Nonce issues a registration nonce bound to the connection conn for the
// device whose encoded public keys are dev; the grant also carries a key
// challenge sealed to its messaging key, which Register then requires.
func (s *Service) Nonce(conn string, dev []byte) (NonceGrant, error) {
	const op = "nonce"
	if len(dev) == 0 {
		// A nonce without the device's keys carries no key challenge, and registration refuses it: say so now.
		return NonceGrant{}, s.refuse(op, "", kind(ErrMalformed, errors.New("a registration nonce needs the device's public keys")))
	}
	dp, err := e2ee.DecodeDevicePublic(dev)
	if err != nil {
		return NonceGrant{}, s.refuse(op, "", kind(ErrMalformed, err))
	}
	g := &regGrant{device: dp}
	n, exp, err := s.nonces.issue(conn, g)
	if err != nil {
		return NonceGrant{}, s.refuse(op, "", err)
	}
	ch, err := e2ee.NewKeyChallenge(g.device, s.cfg.GatewayID, n[:])
	if err != nil {
		return NonceGrant{}, s.refuse(op, "", kind(ErrMalformed, err))
	}
	g.challenge = ch
	return NonceGrant{Nonce: n, Expires: exp, Challenge: ch.Sealed}, nil
}

// ConnClosed forgets the live nonces of a closed connection.
func (s *Service) ConnClosed(conn string) { s.nonces.dropConn(conn) }

// Register registers an account's first device through connection conn: it
// consumes the nonce (which must be this connection's, unused and
// unexpired), checks the registration proof over it, the answer to the
// messaging-key challenge and the genesis chain, publishes the genesis
// statement to the log and stores the record in the grid.
func (s *Service) Register(ctx context.Context, conn string, req RegisterRequest) (*Account, error) {
	const op = "register"
	grant, err := s.nonces.consume(conn, req.Nonce)
	if err != nil {
		return nil, s.refuse(op, "", err)
	}
	g, _ := grant.(*regGrant)
	if g == nil || g.challenge == nil {
		return nil, s.refuse(op, "", fmt.Errorf("%w: nonce was issued without the device's keys", ErrBadProof))
	}
	h, err := s.openChain(req.Chain)
	if err != nil {
		return nil, s.refuse(op, "", err)
	}
	subject := h.acct.ID.String()
	if h.acct.Length != 1 {
		return nil, s.refuse(op, subject, fmt.Errorf("%w: registration takes the genesis statement alone, got %d statements", ErrInvalidChain, h.acct.Length))
	}
	dev := h.acct.Devices[0]
	if !dev.Public.Equal(g.device) {
		return nil, s.refuse(op, subject, fmt.Errorf("%w: genesis device is not the device the nonce was issued for", ErrBadProof))
	}
	proof, err := e2ee.DecodeRegistrationProof(req.Proof)
	if err != nil {
		return nil, s.refuse(op, subject, kind(ErrMalformed, err))
	}
	if !proof.Device.Equal(dev.Public) {
		return nil, s.refuse(op, subject, fmt.Errorf("%w: proof is for another device", ErrBadProof))
	}
	if err := proof.Verify(s.cfg.GatewayID, req.Nonce[:], s.now(), s.cfg.Validator.MaxClockSkew); err != nil {
		if errors.Is(err, e2ee.ErrBadSignature) {
			return nil, s.refuse(op, subject, kind(ErrBadSignature, err))
		}
		return nil, s.refuse(op, subject, kind(ErrBadProof, err))
	}
	if err := g.challenge.Check(req.Answer); err != nil {
		return nil, s.refuse(op, subject, kind(ErrBadProof, err))
	}
	if cur, err := s.fetch(ctx, AccountKey(h.acct.ID)); err == nil && cur != nil {
		return nil, s.refuse(op, subject, ErrExists)
	} else if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, s.refuse(op, subject, err)
	}
	acct, err := s.accept(ctx, op, nil, h)
	if err != nil {
		return nil, s.refuse(op, subject, err)
	}
	return acct, nil
}

// Append accepts a new version of an account's chain (statements added by
// linking, revocation, username, profile or social link): it must replay,
// and strictly extend the chain the grid holds. New statements are
// published to the log, and the record is stored and announced.
func (s *Service) Append(ctx context.Context, chainBytes []byte) (*Account, error) {
	const op = "append"
	h, err := s.openChain(chainBytes)
	if err != nil {
		return nil, s.refuse(op, "", err)
	}
	subject := h.acct.ID.String()
	cur, err := s.latest(ctx, h.acct.ID)
	if err != nil {
		return nil, s.refuse(op, subject, err)
	}
	switch relate(cur, h) {
	case e2ee.Same:
		return cur.acct, nil // nothing new: idempotent
	case e2ee.RolledBack:
		return nil, s.refuse(op, subject, fmt.Errorf("%w: %d statements, the grid holds %d", ErrRollback, h.acct.Length, cur.acct.Length))
	case e2ee.Forked:
		return nil, s.refuse(op, subject, fmt.Errorf("%w: diverges from the grid's chain at statement %d", ErrFork, e2ee.ForkIndex(cur.chain, h.chain)))
	}
	if err := s.checkUsername(ctx, cur, h); err != nil {
		return nil, s.refuse(op, subject, err)
	}
	acct, err := s.accept(ctx, op, cur, h)
	if err != nil {
		return nil, s.refuse(op, subject, err)
	}
	return acct, nil
}

// openChain wraps a client's encoded chain in a record (no receipts yet) and
// opens it.
func (s *Service) openChain(chainBytes []byte) (*held, error) {
	if len(chainBytes) > MaxRecordSize {
		return nil, fmt.Errorf("%w: chain of %d bytes, limit %d", ErrTooLarge, len(chainBytes), MaxRecordSize)
	}
	raw, err := s.ver.codec.marshal(&Record{Chain: chainBytes})
	if err != nil {
		return nil, err
	}
	return s.ver.openWith(raw, false)
}

// checkUsername enforces the username rules on the statements h adds to
// cur: a new or renewed name must be normalized and freshly signed. A new
// claim is refused with ErrUsernameTaken while the grid holds a live claim
// of another account (first come, first served where the gateway can see
// the name; the order of competing claims, compareClaims, only decides
// between claims made where neither could see the other); a claim whose
// account has left the name since, or a release, holds nothing
// (nameHolder). A renewal is
// refused with ErrUsernameLost if another account's claim comes first in
// that order, that is if the claim already lost.
func (s *Service) checkUsername(ctx context.Context, cur, h *held) error {
	a := h.acct
	if a.Username == "" || a.UsernameAt.Equal(cur.acct.UsernameAt) && a.Username == cur.acct.Username {
		return nil
	}
	if !isNormalUsername(a.Username) {
		return fmt.Errorf("%w: %q is not a normalized directory username", ErrUsernameInvalid, a.Username)
	}
	now := s.now()
	if d := now.Sub(a.UsernameAt); d > s.cfg.Validator.MaxClockSkew || d < -s.cfg.Validator.MaxClockSkew {
		return fmt.Errorf("%w: set-username statement time %s is not current", ErrInvalidChain, a.UsernameAt.Format(time.RFC3339))
	}
	holder, err := s.nameHolder(ctx, a.Username, func(got *held) bool { return got.acct.ID == a.ID })
	switch {
	case errors.Is(err, ErrNotFound):
		return nil
	case err != nil:
		return err
	case holder.acct.ID == a.ID:
		return nil
	case h.claim.start >= cur.acct.Length:
		// nameHolder only answers a live claim, so this one blocks.
		return fmt.Errorf("%w: %q is held by account %s", ErrUsernameTaken, a.Username, holder.acct.ID)
	}
	// A renewal is judged with the receipts the grid already has for the
	// statements before h's, so it keeps its witnessed place.
	cand := h
	if len(cur.rec.Receipts) > 0 {
		raw, err := s.ver.codec.marshal(&Record{Chain: h.rec.Chain, Receipts: cur.rec.Receipts})
		if err != nil {
			return err
		}
		if cand, err = s.ver.openWith(raw, false); err != nil {
			return err
		}
	}
	if claimBefore(holder, cand) {
		return fmt.Errorf("%w: the claim of %q made at %s lost to account %s's earlier claim", ErrUsernameLost,
			a.Username, cand.claim.at.Format(time.RFC3339), holder.acct.ID)
	}
	return nil
}

// nameWinner returns the live claim of another account that comes before
// h's claim of its username in the grid's order (compareClaims), or nil if
// the grid holds none (h's claim is the name's, or would be). A claim
// record that would come first is checked against its account's latest
// record (nameHolder): an account that has left the name wins nothing.
func (s *Service) nameWinner(ctx context.Context, h *held) (*held, error) {
	holder, err := s.nameHolder(ctx, h.acct.Username, func(got *held) bool {
		return got.acct.ID == h.acct.ID || !claimBefore(got, h)
	})
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, err
	case holder.acct.ID == h.acct.ID || !claimBefore(holder, h):
		return nil, nil
	}
	return holder, nil
}

// accept publishes h's statements after cur to the log, stores the record
// under every key and announces it. cur is nil for a registration. A
// statement the log cannot take now is left without a receipt for
// UpgradeReceipts to add, unless receipts are required.
func (s *Service) accept(ctx context.Context, op string, cur, h *held) (*Account, error) {
	from := uint64(0)
	var receipts []Receipt
	if cur != nil {
		from = cur.acct.Length
		receipts = append(receipts, cur.rec.Receipts...)
	}
	if s.cfg.Publisher != nil {
		got, err := s.publishFrom(ctx, h, from)
		if err != nil {
			if s.cfg.Validator.RequireReceipts {
				return nil, err
			}
			s.log.Warn("statement stored without its log receipt; publication is retried",
				"account", h.acct.ID.String(), "err", err)
		}
		receipts = append(receipts, got...)
	}
	raw, err := s.ver.codec.marshal(&Record{Chain: h.rec.Chain, Receipts: receipts})
	if err != nil {
		return nil, err
	}
	full, err := s.ver.open(raw)
	if err != nil {
		return nil, err
	}
	if err := s.store(ctx, full); err != nil {
		return nil, err
	}
	if err := s.hold(ctx, full); err != nil {
		return nil, err
	}
	if s.cfg.Publisher != nil {
		if err := s.markPending(ctx, full); err != nil {
			return nil, err
		}
	}
	s.adopt(full, "local")
	s.announce(ctx, full)
	s.m.accepted.WithLabelValues(op).Inc()
	return full.acct, nil
}

// publishFrom publishes h's statements from seq from on, in order, and
// returns their receipts up to the first that fails. A receipt that does not
// satisfy the validators' receipt policy counts as a failure.
func (s *Service) publishFrom(ctx context.Context, h *held, from uint64) ([]Receipt, error) {
	stmts := h.chain.Statements()
	key := chain.DeriveAccountKey(stmts[0].Encode())
	var out []Receipt
	for seq := from; seq < h.acct.Length; seq++ {
		if h.rec.receiptFor(seq) != nil {
			continue
		}
		r := chain.Record{Account: key, Seq: seq, Body: stmts[seq].Encode()}
		pctx, cancel := context.WithTimeout(ctx, s.lim.PublishTimeout)
		rc, err := s.cfg.Publisher.Publish(pctx, r)
		cancel()
		if err == nil && s.cfg.Validator.Receipts != nil {
			_, err = s.cfg.Validator.Receipts.Verify(rc, r)
		}
		if err != nil {
			s.m.publishFailures.Inc()
			return out, fmt.Errorf("%w: publish statement %d: %v", ErrUnavailable, seq, err)
		}
		out = append(out, Receipt{Seq: seq, Body: rc.Marshal()})
	}
	return out, nil
}

// store puts h under its account key, every device key, its username key
// and the key of every name it has left whose release is still live (so
// the release supersedes the account's older claim records there, and the
// name is free at once). The account key must succeed; the index keys are
// best effort (republish retries them).
func (s *Service) store(ctx context.Context, h *held) error {
	ctx, cancel := context.WithTimeout(ctx, s.lim.PutTimeout)
	defer cancel()
	if err := s.cfg.Router.PutValue(ctx, AccountKey(h.acct.ID), h.raw); errors.Is(err, kb.ErrLookupFailure) {
		// A node alone: kad-dht keeps the record locally before it looks
		// for peers, serves it from there once peers come, and the held
		// copy is republished.
		s.log.Warn("no peer to store the record on yet; kept locally", "account", h.acct.ID.String())
		return nil
	} else if err != nil {
		return storeFailure(err)
	}
	for _, d := range h.acct.Devices {
		if err := s.cfg.Router.PutValue(ctx, DeviceKey(d.ID), h.raw); err != nil {
			s.log.Warn("store device index", "device", d.ID.String(), "err", err)
		}
	}
	if h.acct.Username != "" && s.ver.usernameLive(h) {
		// A claim that lost is not stored under the name again: it would
		// lose every Select, but on a peer that holds no claim yet it would
		// linger until a lookup corrects it.
		w, err := s.nameWinner(ctx, h)
		if err != nil {
			// Unknown (no peer answered): store it; the grid's Select
			// still orders it against any other claim.
			s.log.Debug("username holder unknown", "name", h.acct.Username, "err", err)
		}
		if w != nil {
			s.m.namesLost.Inc()
			s.log.Info("username claim lost; not stored under the name", "name", h.acct.Username,
				"account", h.acct.ID.String(), "winner", w.acct.ID.String())
		} else if err := s.cfg.Router.PutValue(ctx, UsernameKey(h.acct.Username), h.raw); err != nil {
			s.log.Warn("store username", "name", h.acct.Username, "err", err)
		}
	}
	for _, n := range s.ver.released(h) {
		if err := s.cfg.Router.PutValue(ctx, UsernameKey(n), h.raw); err != nil {
			// Refused where another account's live claim is stored: the
			// release is only needed where this account's claim was.
			s.log.Debug("store username release", "name", n, "err", err)
		}
	}
	return nil
}

// storeFailure maps a DHT put error to a directory sentinel.
func storeFailure(err error) error {
	for _, k := range []error{ErrFork, ErrRollback, ErrUsernameTaken, ErrAccountMismatch, ErrTooLarge, ErrMalformed, ErrBadSignature, ErrRevokedSigner, ErrInvalidChain} {
		if errors.Is(err, k) {
			return fmt.Errorf("store: %w", err)
		}
	}
	if err != nil && err.Error() == "can't replace a newer value with an older value" {
		return fmt.Errorf("store: %w: %v", ErrRollback, err)
	}
	return fmt.Errorf("store: %w: %v", ErrUnavailable, err)
}

// refuse counts a refusal by code and wraps err with op and subject.
func (s *Service) refuse(op, subject string, err error) error {
	s.m.refusals.WithLabelValues(CodeOf(err).Reason()).Inc()
	return opErr(op, subject, err)
}

// Settings are the directory settings a node takes in its configuration.
type Settings struct {
	// Validator configures the record validators (clock, username lifetime).
	Validator ValidatorConfig
	// Limits are the service's limits; zero fields take defaults.
	Limits Limits
	// Publisher is the key publication log; nil stores records without
	// receipts.
	Publisher Publisher
}
