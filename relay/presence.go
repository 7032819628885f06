package relay

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/routing"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/iagon/gridchat/wire"
)

// PresenceNamespace is the DHT namespace of presence records; a record's key is PresenceKey(device).
const PresenceNamespace = "gcpres"

// PresenceTopic is the gossipsub topic on which gateways announce presence records as devices come and go, in a
// grid with the default protocol prefix "/gridchat" (PresenceTopicFor).
const PresenceTopic = "/gridchat/presence/1"

// PresenceTopicFor returns the presence topic of the grid whose protocol prefix is prefix: prefix +
// "/presence/1". The empty prefix is the default one and gives PresenceTopic.
func PresenceTopicFor(prefix protocol.ID) string {
	if prefix == "" {
		return PresenceTopic
	}
	return string(prefix) + "/presence/1"
}

// DefaultMaxPresenceGateways is how many gateways the presence cache keeps per device by default: a device may
// be connected to several at once (failover, an overlapping reconnect, several network paths).
const DefaultMaxPresenceGateways = 8

// DefaultPresenceCacheSize is how many devices the presence cache keeps by default.
const DefaultPresenceCacheSize = 100_000

// PresenceKey returns the DHT key of a device's presence record: "/gcpres/" and the device ID in lowercase hex.
func PresenceKey(d wire.DeviceID) string {
	return "/" + PresenceNamespace + "/" + hex.EncodeToString(d[:])
}

func parsePresenceKey(key string) (wire.DeviceID, error) {
	var d wire.DeviceID
	rest, ok := strings.CutPrefix(key, "/"+PresenceNamespace+"/")
	if !ok || len(rest) != 2*wire.DeviceIDSize || strings.ToLower(rest) != rest {
		return d, fmt.Errorf("relay: presence key %q: want /%s/<64 lowercase hex digits>", key, PresenceNamespace)
	}
	if _, err := hex.Decode(d[:], []byte(rest)); err != nil {
		return d, fmt.Errorf("relay: presence key %q: %w", key, err)
	}
	return d, nil
}

// PresenceValidator is the DHT validator and selector of the gcpres namespace. It needs no lookups: a record
// carries its device's signing key, and the device ID is the hash of that key.
type PresenceValidator struct {
	// Now is the clock (default time.Now); TTL the longest a record may live after signing (default
	// wire.DefaultPresenceTTL).
	Now func() time.Time
	TTL time.Duration
}

func (v PresenceValidator) open(value []byte) (*wire.Presence, error) {
	now, ttl := time.Now, v.TTL
	if v.Now != nil {
		now = v.Now
	}
	if ttl <= 0 {
		ttl = wire.DefaultPresenceTTL
	}
	return wire.OpenPresence(value, now(), ttl)
}

// Validate accepts a current, correctly signed presence record stored under its own device's key.
func (v PresenceValidator) Validate(key string, value []byte) error {
	d, err := parsePresenceKey(key)
	if err != nil {
		return err
	}
	p, err := v.open(value)
	if err != nil {
		return fmt.Errorf("relay: presence record for %s: %w", key, err)
	}
	if p.Device != d {
		return fmt.Errorf("relay: presence record under %s is for another device", key)
	}
	return nil
}

// Select picks the valid record with the highest sequence number (the first of equals).
func (v PresenceValidator) Select(key string, values [][]byte) (int, error) {
	best, bestSeq := -1, uint64(0)
	for i, val := range values {
		if v.Validate(key, val) != nil {
			continue
		}
		p, _ := v.open(val)
		if best < 0 || p.Seq > bestSeq {
			best, bestSeq = i, p.Seq
		}
	}
	if best < 0 {
		return 0, errors.New("relay: no valid presence record")
	}
	return best, nil
}

// Routing is the part of the DHT presence uses.
type Routing interface {
	PutValue(ctx context.Context, key string, value []byte, opts ...routing.Option) error
	GetValue(ctx context.Context, key string, opts ...routing.Option) ([]byte, error)
}

// PresenceConfig configures a Presence service.
type PresenceConfig struct {
	// Routing stores records in the DHT; nil keeps presence to gossip and the cache.
	Routing Routing
	// PubSub carries records on the presence topic; nil keeps presence to the DHT and the cache.
	PubSub *pubsub.PubSub
	// ProtocolPrefix is the grid's protocol prefix (the node's protocol_prefix): records are gossiped on
	// PresenceTopicFor(ProtocolPrefix). Empty means the default, PresenceTopic.
	ProtocolPrefix protocol.ID
	// CacheSize bounds the presence cache (default DefaultPresenceCacheSize, 100,000 devices).
	CacheSize int
	// MaxGateways bounds the gateways the cache keeps per device (default DefaultMaxPresenceGateways).
	MaxGateways int
	// TTL is the longest a record may live after signing (default wire.DefaultPresenceTTL).
	TTL time.Duration
	// NegativeTTL is how long a lookup that found nothing is remembered (default 5 s).
	NegativeTTL time.Duration
	// MaxDHTPuts bounds concurrent DHT writes; records beyond it go by gossip only (default 64).
	MaxDHTPuts int
	// Now is the clock (default time.Now).
	Now     func() time.Time
	Metrics prometheus.Registerer
	Logger  *slog.Logger
}

// Presence publishes devices' presence records and answers where a device is connected (every gateway whose
// newest record of the device is online), from a bounded cache fed by gossip, with the DHT behind it. It
// implements Locator.
type Presence struct {
	cfg   PresenceConfig
	val   PresenceValidator
	log   *slog.Logger
	name  string // the presence topic
	topic *pubsub.Topic
	sub   *pubsub.Subscription
	puts  chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	mu    sync.Mutex
	cache map[wire.DeviceID]*presenceEntry

	published, received, lookups, misses prometheus.Counter
	rejected                             *prometheus.CounterVec
}

// presenceEntry is what the cache knows of one device: one slot per gateway its records named, or a negative
// entry.
type presenceEntry struct {
	gws  []gatewaySlot
	none bool      // a negative entry: nothing was found
	end  time.Time // when a negative entry ends
}

// gatewaySlot is the newest record the cache accepted for one (device, gateway) pair.
type gatewaySlot struct {
	gateway string // the record's gateway: its canonical peer ID text, or the field as is if it does not decode
	seq     uint64
	online  bool
	loc     Location // set when online
	expires time.Time
}

// expiry is when the entry stops answering: the latest expiry of its slots, or the end of a negative entry.
func (e *presenceEntry) expiry() time.Time {
	if e.none {
		return e.end
	}
	var t time.Time
	for _, g := range e.gws {
		if g.expires.After(t) {
			t = g.expires
		}
	}
	return t
}

// live returns the gateways of the entry's current online records, the highest sequence first; those whose
// sequence is below the highest of the entry's current records (online or offline) are marked Superseded.
func (e *presenceEntry) live(now time.Time) []Location {
	var newest uint64
	for _, g := range e.gws {
		if now.Before(g.expires) {
			newest = max(newest, g.seq)
		}
	}
	var buf [DefaultMaxPresenceGateways]int
	on := buf[:0] // indices of the live slots
	for i, g := range e.gws {
		if g.online && now.Before(g.expires) {
			on = append(on, i)
		}
	}
	if len(on) == 0 {
		return nil
	}
	// Highest sequence first; equal sequences (only a device can sign those) in gateway order, so that every
	// node answers alike whatever order the records came in.
	slices.SortFunc(on, func(i, j int) int {
		a, b := &e.gws[i], &e.gws[j]
		if c := cmp.Compare(b.seq, a.seq); c != 0 {
			return c
		}
		return strings.Compare(a.gateway, b.gateway)
	})
	out := make([]Location, len(on))
	for k, i := range on {
		out[k] = e.gws[i].loc
		out[k].Superseded = e.gws[i].seq < newest
	}
	return out
}

// accept merges a verified record into the entry: the record replaces its own gateway's slot when it is newer
// (or the slot has expired; of equal sequences, offline wins) and leaves the other gateways' slots alone, so an
// offline record withdraws only its own gateway. A new gateway takes a free or expired slot, else the slot of
// the lowest sequence if that is lower than the record's. It reports whether the record was taken, and
// whether it was refused for want of room.
func (e *presenceEntry) accept(g gatewaySlot, now time.Time, maxGateways int) (taken, full bool) {
	if e.none {
		*e = presenceEntry{}
	}
	for i := range e.gws {
		if e.gws[i].gateway == g.gateway {
			old := e.gws[i]
			newer := g.seq > old.seq || g.seq == old.seq && old.online && !g.online
			if !newer && now.Before(old.expires) {
				return false, false
			}
			e.gws[i] = g
			return true, false
		}
	}
	e.gws = slices.DeleteFunc(e.gws, func(s gatewaySlot) bool { return !now.Before(s.expires) })
	if len(e.gws) < maxGateways {
		e.gws = append(e.gws, g)
		return true, false
	}
	low := 0
	for i := range e.gws {
		if e.gws[i].seq < e.gws[low].seq {
			low = i
		}
	}
	if e.gws[low].seq >= g.seq {
		return false, true
	}
	e.gws[low] = g
	return true, false
}

// NewPresence starts the presence service: it joins the presence topic (when PubSub is set) and caches what
// arrives.
func NewPresence(cfg PresenceConfig) (*Presence, error) {
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = DefaultPresenceCacheSize
	}
	if cfg.MaxGateways <= 0 {
		cfg.MaxGateways = DefaultMaxPresenceGateways
	}
	if cfg.TTL <= 0 {
		cfg.TTL = wire.DefaultPresenceTTL
	}
	if cfg.NegativeTTL <= 0 {
		cfg.NegativeTTL = 5 * time.Second
	}
	if cfg.MaxDHTPuts <= 0 {
		cfg.MaxDHTPuts = 64
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Presence{
		cfg: cfg, val: PresenceValidator{Now: cfg.Now, TTL: cfg.TTL}, log: cfg.Logger,
		name:  PresenceTopicFor(cfg.ProtocolPrefix),
		puts:  make(chan struct{}, cfg.MaxDHTPuts),
		cache: make(map[wire.DeviceID]*presenceEntry),
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: "gridchat_presence_published_total",
			Help: "Presence records published by this node's gateway."}),
		received: prometheus.NewCounter(prometheus.CounterOpts{Name: "gridchat_presence_received_total",
			Help: "Presence records learnt from gossip."}),
		lookups: prometheus.NewCounter(prometheus.CounterOpts{Name: "gridchat_presence_lookups_total",
			Help: "Presence lookups."}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{Name: "gridchat_presence_cache_misses_total",
			Help: "Presence lookups that went to the DHT."}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gridchat_presence_rejected_total",
			Help: "Presence records refused, by reason."}, []string{"reason"}),
	}
	if cfg.Metrics != nil {
		for _, c := range []prometheus.Collector{p.published, p.received, p.lookups, p.misses, p.rejected} {
			if err := cfg.Metrics.Register(c); err != nil {
				return nil, fmt.Errorf("relay: presence: %w", err)
			}
		}
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	if cfg.PubSub != nil {
		err := cfg.PubSub.RegisterTopicValidator(p.name, func(_ context.Context, _ peer.ID, m *pubsub.Message) bool {
			_, err := p.val.open(m.Data)
			if err != nil {
				p.rejected.WithLabelValues("gossip_invalid").Inc()
			}
			return err == nil
		})
		if err != nil {
			return nil, fmt.Errorf("relay: presence: topic validator: %w", err)
		}
		if p.topic, err = cfg.PubSub.Join(p.name); err != nil {
			_ = cfg.PubSub.UnregisterTopicValidator(p.name)
			return nil, fmt.Errorf("relay: presence: join %s: %w", p.name, err)
		}
		if p.sub, err = p.topic.Subscribe(); err != nil {
			_ = p.topic.Close()
			_ = cfg.PubSub.UnregisterTopicValidator(p.name)
			return nil, fmt.Errorf("relay: presence: subscribe %s: %w", p.name, err)
		}
		p.wg.Add(1)
		go p.readGossip()
	}
	return p, nil
}

func (p *Presence) readGossip() {
	defer p.wg.Done()
	for {
		m, err := p.sub.Next(p.ctx)
		if err != nil {
			return
		}
		if rec, err := p.val.open(m.Data); err == nil {
			p.received.Inc()
			p.remember(rec)
		}
	}
}

// remember caches a verified record in its (device, gateway) slot if it is newer than what the slot holds.
func (p *Presence) remember(rec *wire.Presence) {
	g := gatewaySlot{gateway: rec.Gateway, seq: rec.Seq, online: rec.Online, expires: rec.Expires}
	// Slots are keyed by the gateway's canonical text, so that two spellings of one peer ID share a slot.
	id, err := peer.Decode(rec.Gateway)
	if err == nil {
		g.gateway = id.String()
	}
	if rec.Online {
		if err != nil {
			p.rejected.WithLabelValues("bad_gateway").Inc()
			return
		}
		g.loc.Gateway = id
		for _, a := range rec.Addrs {
			if m, err := ma.NewMultiaddr(a); err == nil {
				g.loc.Addrs = append(g.loc.Addrs, m)
			}
		}
	}
	now := p.cfg.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.cache[rec.Device]
	if !ok {
		p.makeRoom(now)
		e = &presenceEntry{}
	}
	taken, full := e.accept(g, now, p.cfg.MaxGateways)
	if taken {
		p.cache[rec.Device] = e
	}
	if full {
		p.rejected.WithLabelValues("gateways_full").Inc()
	}
}

// makeRoom keeps the cache under its bound: expired entries go first, then arbitrary ones. p.mu is held.
func (p *Presence) makeRoom(now time.Time) {
	if len(p.cache) < p.cfg.CacheSize {
		return
	}
	for d, e := range p.cache {
		if !now.Before(e.expiry()) {
			delete(p.cache, d)
		}
	}
	for d := range p.cache {
		if len(p.cache) < p.cfg.CacheSize {
			break
		}
		delete(p.cache, d)
	}
}

// Publish verifies a signed presence record, caches it, announces it on the presence topic and stores it in the
// DHT in the background (within MaxDHTPuts). It does not wait for the network.
func (p *Presence) Publish(ctx context.Context, record []byte) error {
	rec, err := p.val.open(record)
	if err != nil {
		p.rejected.WithLabelValues("publish_invalid").Inc()
		return fmt.Errorf("relay: publish presence: %w", err)
	}
	p.remember(rec)
	p.published.Inc()
	if p.topic != nil {
		if err := p.topic.Publish(ctx, record); err != nil {
			p.log.Debug("relay: gossip presence", "err", err)
		}
	}
	if p.cfg.Routing == nil {
		return nil
	}
	select {
	case p.puts <- struct{}{}:
	default:
		p.rejected.WithLabelValues("dht_busy").Inc()
		return nil
	}
	// The check and the Add happen under p.mu, as Close's cancel does, so a put is either refused or counted
	// before Close waits: none starts after Close returned.
	p.mu.Lock()
	if p.ctx.Err() != nil {
		p.mu.Unlock()
		<-p.puts
		return nil
	}
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		defer func() { <-p.puts }()
		ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
		defer cancel()
		if err := p.cfg.Routing.PutValue(ctx, PresenceKey(rec.Device), record); err != nil && p.ctx.Err() == nil {
			p.log.Debug("relay: store presence in DHT", "err", err)
		}
	}()
	return nil
}

// Locate returns the gateway of the device's newest current online record (the first of Locations).
func (p *Presence) Locate(ctx context.Context, d wire.DeviceID) (Location, error) {
	locs, err := p.Locations(ctx, d)
	if err != nil {
		return Location{}, err
	}
	return locs[0], nil
}

// Locations returns every gateway the device is connected to by its current records, the newest record's
// first: a gateway stays listed until its own offline record, a newer online record of that gateway replaces
// it, or its record expires. A device with none is ErrNotOnline. The answer comes from the cache when it holds
// an unexpired record of the device; otherwise from the DHT, which keeps only a device's newest record, so it
// names at most one gateway.
func (p *Presence) Locations(ctx context.Context, d wire.DeviceID) ([]Location, error) {
	p.lookups.Inc()
	now := p.cfg.Now()
	p.mu.Lock()
	e, ok := p.cache[d]
	var locs []Location
	cached := ok && now.Before(e.expiry())
	if cached {
		locs = e.live(now)
	}
	p.mu.Unlock()
	if cached {
		if len(locs) == 0 {
			return nil, ErrNotOnline
		}
		return locs, nil
	}
	if p.cfg.Routing == nil {
		return nil, ErrNotOnline
	}
	p.misses.Inc()
	val, err := p.cfg.Routing.GetValue(ctx, PresenceKey(d))
	if err != nil {
		if ctx.Err() == nil {
			p.mu.Lock()
			if e, ok := p.cache[d]; !ok || !now.Before(e.expiry()) {
				p.makeRoom(now)
				p.cache[d] = &presenceEntry{none: true, end: now.Add(p.cfg.NegativeTTL)}
			}
			p.mu.Unlock()
		}
		return nil, fmt.Errorf("%w: %v", ErrNotOnline, err)
	}
	rec, err := p.val.open(val)
	if err != nil || rec.Device != d {
		return nil, fmt.Errorf("%w: bad record from DHT", ErrNotOnline)
	}
	p.remember(rec)
	p.mu.Lock()
	if e, ok := p.cache[d]; ok && !e.none {
		locs = e.live(now)
	}
	p.mu.Unlock()
	if len(locs) == 0 {
		return nil, ErrNotOnline
	}
	return locs, nil
}

// Close leaves the topic and waits for background DHT writes. It is idempotent.
func (p *Presence) Close() error {
	p.once.Do(func() {
		p.mu.Lock()
		p.cancel()
		p.mu.Unlock()
		if p.sub != nil {
			p.sub.Cancel()
		}
		p.wg.Wait()
		if p.topic != nil {
			_ = p.topic.Close()
			_ = p.cfg.PubSub.UnregisterTopicValidator(p.name)
		}
	})
	return nil
}
