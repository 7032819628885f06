package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/iagon/gridchat/client/store"
	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/wire"
)

// webSocketPath is the gateway's WebSocket route, used when a gateway URL has no path.
const webSocketPath = "/v1/ws"

// Client errors.
var (
	// ErrNoAccount means the state directory holds no device yet (use Register, Link or Restore).
	ErrNoAccount = errors.New("client: no account in this state directory")
	// ErrExists means the state directory already holds a device.
	ErrExists = errors.New("client: state directory already holds a device")
	// ErrClosed means the client was closed.
	ErrClosed = errors.New("client: closed")
	// ErrKeyUnavailable means a device's signed messaging key could not be obtained: the directory has no
	// usable key for it and the device has not answered a key request (it has not been online since).
	ErrKeyUnavailable = errors.New("client: messaging key unavailable")
)

// Config configures a Client. Zero fields take the defaults named on each.
type Config struct {
	// Dir is the directory of the local state. Required.
	Dir string
	// StoreKey is the 32-byte key that encrypts the local state at rest (keep it in the platform keystore).
	// Required.
	StoreKey []byte
	// Gateways are the gateway URLs to connect to ("ws://host:port", "http://host:port" or "host:port"); any
	// node of the grid works. The client uses the first that answers and moves on to the next when a
	// connection fails. Required for networked use.
	Gateways []string
	// HTTPClient makes directory lookups and WebSocket handshakes. Default: a client with a 20 s timeout.
	HTTPClient *http.Client
	// Logger receives the client's logs (never plaintext or keys). Default: discard.
	Logger *slog.Logger
	// Now is the device's clock. Default: time.Now. Everything the client signs or checks against the grid's
	// time (auth proofs, registration, account statements, messaging keys, presence records, signed requests),
	// message times and causal counters, and the messaging engine's bookkeeping use it corrected by the
	// gateway's clock from its hello, within MaxClockOffset (docs/PROTOCOL.md §7 Handshake); only the account
	// cache ages its entries by it as it is.
	Now func() time.Time
	// Renewal says when sessions renew. Default: e2ee.DefaultRenewalPolicy (100 messages or 7 days, and always
	// on a membership change).
	Renewal e2ee.RenewalPolicy
	// DirectoryTTL is how long a verified account is used before it is fetched again. Default 10 s.
	DirectoryTTL time.Duration
	// SentKeep is how long sent messages are kept (encrypted at rest) to answer resend requests. Default 7 days.
	SentKeep time.Duration
	// SentMax caps the sent messages kept per conversation. Default 10,000.
	SentMax int
	// SeenKeep is how long processed message IDs are remembered to drop redelivered envelopes. Default 30 days.
	SeenKeep time.Duration
	// ResendInterval is the least time between two resend requests to one device. Default 10 s.
	ResendInterval time.Duration
	// MinBackoff and MaxBackoff bound the wait between reconnection attempts. Defaults 100 ms and 10 s.
	MinBackoff, MaxBackoff time.Duration
	// CallTimeout bounds one request to the gateway. Default 30 s.
	CallTimeout time.Duration
	// PingInterval is how long the gateway may stay silent before the client sends it a "ping"; when nothing,
	// not even the answer, has arrived after twice as long, the connection is given up and the client connects
	// to the next gateway, whose auth publishes a fresh presence record. A path that died without closing (the
	// gateway withdraws the device's presence when it notices) is thus left within 2.5 × PingInterval. Default
	// (and when not positive) 15 s.
	PingInterval time.Duration
	// StoredQuorum is how many distinct mailbox replicas must sign a receipt before a "stored" status is
	// believed. Default 2 (the grid's default write quorum of 3 replicas).
	StoredQuorum int
	// KeyWait bounds the wait for another device's answer to a messaging-key request, the fallback when the
	// directory has no usable key for it. Default 15 s.
	KeyWait time.Duration
	// NoSync skips fsync of the local store (tests and benchmarks only).
	NoSync bool
}

func (c Config) withDefaults() (Config, error) {
	if c.Dir == "" {
		return c, errors.New("client: Config.Dir is required")
	}
	if len(c.StoreKey) != store.KeySize {
		return c, fmt.Errorf("client: Config.StoreKey must be %d bytes", store.KeySize)
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 20 * time.Second}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Renewal == (e2ee.RenewalPolicy{}) {
		c.Renewal = e2ee.DefaultRenewalPolicy()
	}
	if c.DirectoryTTL == 0 {
		c.DirectoryTTL = 10 * time.Second
	}
	if c.SentKeep == 0 {
		c.SentKeep = 7 * 24 * time.Hour
	}
	if c.SentMax == 0 {
		c.SentMax = 10000
	}
	if c.SeenKeep == 0 {
		c.SeenKeep = 30 * 24 * time.Hour
	}
	if c.ResendInterval == 0 {
		c.ResendInterval = 10 * time.Second
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = 100 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 10 * time.Second
	}
	if c.StoredQuorum == 0 {
		c.StoredQuorum = 2
	}
	if c.KeyWait == 0 {
		c.KeyWait = 15 * time.Second
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = 30 * time.Second
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 15 * time.Second
	}
	for i, g := range c.Gateways {
		u, err := gatewayURL(g)
		if err != nil {
			return c, err
		}
		c.Gateways[i] = u
	}
	return c, nil
}

// Client is one device of a gridchat account: it keeps the device's keys and conversations in an encrypted
// local store, stays connected to a gateway (reconnecting with backoff), and sends and receives end-to-end
// encrypted messages. Its methods are safe for concurrent use.
type Client struct {
	cfg   Config
	st    *store.Store
	cd    codec
	dev   *e2ee.DeviceKeys
	eng   *engine
	accts *accounts
	keys  keyBook
	ev    *eventQueue
	out   chan Event
	log   *slog.Logger
	clock *gridClock // Config.Now corrected to the gateway's clock

	mu        sync.Mutex
	chain     *e2ee.Chain
	conn      *conn
	gw        int           // index of the gateway in use
	connected chan struct{} // closed while a connection is up; replaced when it drops
	closed    bool
	// linkRelays are the open link rendezvous of this device as a host, by rendezvous ID.
	linkRelays map[string]*gatewayRelay

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// openStore opens the state store of cfg.
func openStore(cfg Config) (*store.Store, error) {
	return store.Open(cfg.Dir, cfg.StoreKey, store.Options{NoSync: cfg.NoSync})
}

// Open opens an existing device's state and starts connecting. It returns ErrNoAccount if the directory holds
// no device.
func Open(ctx context.Context, cfg Config) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return openState(cfg, nil)
}

// openState opens cfg's state store and starts the client on it. With fill, the store must hold no device
// yet, and fill writes the new device's state first; the store is closed again on any failure.
func openState(cfg Config, fill func(*store.Store) error) (*Client, error) {
	st, err := openStore(cfg)
	if err != nil {
		return nil, err
	}
	if fill != nil {
		if _, ok := st.Get(bucketSelf, keyDevice); ok {
			st.Close()
			return nil, ErrExists
		}
		if err := fill(st); err != nil {
			st.Close()
			return nil, err
		}
	}
	c, err := load(cfg, st)
	if err != nil {
		st.Close()
		return nil, err
	}
	c.start()
	return c, nil
}

// load builds a Client from a store that holds a device.
func load(cfg Config, st *store.Store) (*Client, error) {
	rawDev, ok := st.Get(bucketSelf, keyDevice)
	if !ok {
		return nil, ErrNoAccount
	}
	dev, err := e2ee.DecodeDeviceKeys(rawDev)
	if err != nil {
		return nil, fmt.Errorf("client: stored device keys: %w", err)
	}
	rawChain, ok := st.Get(bucketSelf, keyChain)
	if !ok {
		return nil, ErrNoAccount
	}
	chain, err := e2ee.DecodeChain(rawChain)
	if err != nil {
		return nil, fmt.Errorf("client: stored account chain: %w", err)
	}
	self, err := e2ee.Replay(chain)
	if err != nil {
		return nil, fmt.Errorf("client: stored account chain: %w", err)
	}
	cd, err := newCodec()
	if err != nil {
		return nil, err
	}
	var offset time.Duration
	if b, ok := st.Get(bucketSelf, keyClockOffset); ok {
		offset = parseClockOffset(b)
	}
	c := &Client{cfg: cfg, st: st, cd: cd, dev: dev, chain: chain, ev: newEventQueue(), out: make(chan Event, 64),
		log: cfg.Logger, clock: newGridClock(cfg.Now, offset), connected: make(chan struct{})}
	// The client's own methods sign at the grid's time, and the engine keeps it too: message times and causal
	// counters (order.go) follow the grid's clock, so a device whose clock is hours fast sends counters within
	// the others' MaxClockLead, and the engine's stored times (sent, seen, pending) are all on that one clock.
	// The account cache keeps the device's clock (cfg.Now): it only ages its entries.
	c.cfg.Now = c.clock.now
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.accts = newAccounts(c, st, cfg.Now, cfg.DirectoryTTL)
	if _, ok := st.Get(bucketChains, self.Account.String()); !ok {
		if err := st.Put(bucketChains, self.Account.String(), rawChain); err != nil {
			return nil, err
		}
	}
	c.eng = &engine{
		cfg: engineConfig{now: c.clock.now, policy: cfg.Renewal, sentKeep: cfg.SentKeep, sentMax: cfg.SentMax,
			seenKeep: cfg.SeenKeep, resendEvery: cfg.ResendInterval, log: cfg.Logger},
		st: st, cd: cd, dev: dev, self: self.Account, accts: c.accts, tr: c, keys: c, ev: c.ev, async: c.goAsync,
		asked: map[string]time.Time{}, served: map[e2ee.DeviceID][]time.Time{},
	}
	c.eng.onKeys = func(sender e2ee.DevicePublic, keys [][]byte, want bool) {
		for _, k := range keys {
			if err := c.storeKey(sender, k); err != nil {
				c.log.Warn("refusing a messaging key", "device", sender.ID(), "err", err)
			}
		}
		if want {
			c.goAsync(func(ctx context.Context) {
				if err := c.sendKeys(ctx, sender.ID(), false); err != nil {
					c.log.Warn("answering a key request failed", "device", sender.ID(), "err", err)
				}
			})
		}
	}
	c.accts.onChange = func(old, cur *e2ee.AccountState) {
		if cur.Account == self.Account {
			c.adoptOwnChain(cur)
		}
		c.goAsync(func(ctx context.Context) { c.eng.accountChanged(ctx, old, cur) })
	}
	return c, nil
}

// adoptOwnChain keeps the newest verified chain of this account (another device linked or revoked one).
func (c *Client) adoptOwnChain(cur *e2ee.AccountState) {
	raw, ok := c.st.Get(bucketChains, cur.Account.String())
	if !ok {
		return
	}
	chain, err := e2ee.DecodeChain(raw)
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if chain.Len() > c.chain.Len() && e2ee.Compare(c.chain, chain) == e2ee.Extends {
		c.chain = chain
		_ = c.st.Put(bucketSelf, keyChain, raw)
	}
}

// Messaging-key rotation: a new signed messaging key every week (each is valid for two), and retired private
// keys deleted a week after they expire, so a stolen device reveals little of the past.
const (
	rotateEvery = 7 * 24 * time.Hour
	pruneGrace  = 7 * 24 * time.Hour
)

// rotateKeys replaces the messaging key when due and persists the device keys, and reports whether it
// rotated. The caller publishes a new key in the directory (publishOwnKey); it also reaches other devices
// attached to this device's key distributions, and in answer to their key requests.
func (c *Client) rotateKeys() bool {
	c.eng.mu.Lock()
	defer c.eng.mu.Unlock()
	now := c.cfg.Now()
	changed := c.dev.PruneMessagingKeys(now, pruneGrace) > 0
	rotated := false
	if c.dev.RotationDue(now, rotateEvery) {
		if _, err := c.dev.RotateMessagingKey(now, e2ee.DefaultMessagingKeyLifetime); err != nil {
			c.log.Warn("messaging key rotation failed", "err", err)
		} else {
			changed, rotated = true, true
		}
	}
	if changed {
		if err := c.st.Put(bucketSelf, keyDevice, c.dev.Encode()); err != nil {
			c.log.Error("storing rotated device keys failed", "err", err)
		}
	}
	return rotated
}

func (c *Client) start() {
	c.rotateKeys()
	c.eng.prune()
	self := c.eng.self
	_ = c.eng.ensureConv(SelfConversationID(self), &convRecord{Kind: Self})
	c.wg.Go(func() { c.ev.pump(c.out, c.ctx.Done()) })
	if len(c.cfg.Gateways) > 0 {
		c.wg.Go(c.run)
	}
}

// goAsync runs f on a goroutine the client owns; f's context ends when the client closes.
func (c *Client) goAsync(f func(ctx context.Context)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.wg.Go(func() { f(c.ctx) })
}

// Close disconnects and closes the local store. It is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.mu.Lock()
	cn := c.conn
	c.mu.Unlock()
	if cn != nil {
		cn.close()
	}
	c.wg.Wait()
	return c.st.Close()
}

// Events returns the channel of events (messages, delivery statuses, gaps, safety-number changes,
// connection changes). It is closed by Close. Events are queued without bound on the client's side of the
// channel (up to a large cap), so a slow reader never stalls the client.
func (c *Client) Events() <-chan Event { return c.out }

// Account returns this device's account ID.
func (c *Client) Account() e2ee.AccountID { return c.eng.self }

// Device returns this device's ID.
func (c *Client) Device() e2ee.DeviceID { return c.dev.ID() }

// Username returns this account's username, or "".
func (c *Client) Username() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, err := e2ee.Replay(c.chain)
	if err != nil {
		return ""
	}
	return st.Username
}

// --- connection ----------------------------------------------------------------------------------------

// run keeps a connection to some gateway until the client closes.
func (c *Client) run() {
	backoff := c.cfg.MinBackoff
	for attempt := 0; ; attempt++ {
		if c.ctx.Err() != nil {
			return
		}
		c.mu.Lock()
		i := c.gw
		c.mu.Unlock()
		url := c.cfg.Gateways[i%len(c.cfg.Gateways)]
		cn, err := c.connect(url)
		if err == nil {
			backoff = c.cfg.MinBackoff
			c.ev.push(&ConnectionEvent{Gateway: url})
			// Every authentication publishes the current messaging key, so the directory holds it even for a
			// device that goes offline right away (a rotation at start is covered too).
			c.goAsync(func(ctx context.Context) {
				if err := c.publishOwnKey(ctx, cn); err != nil {
					c.log.Warn("messaging key not published", "err", err)
				}
			})
			// The fetch answers once delivery has started, while pushes flow: it must not hold up serve.
			c.goAsync(func(context.Context) { c.fetchMailbox(cn) })
			c.goAsync(func(ctx context.Context) { c.keepAlive(ctx, cn) })
			err = c.serve(cn)
			cn.close()
			c.setConn(nil)
			if c.ctx.Err() != nil {
				return
			}
			c.ev.push(&ConnectionEvent{Gateway: url, Err: err})
		} else {
			c.log.Info("connect failed", "gateway", url, "err", err)
			if errors.Is(err, wire.ErrRevoked) || errors.Is(err, ErrClockOffset) {
				c.ev.push(&ConnectionEvent{Gateway: url, Err: err})
			}
		}
		c.mu.Lock()
		c.gw = (i + 1) % len(c.cfg.Gateways)
		c.mu.Unlock()
		select {
		case <-time.After(jitter(backoff)):
		case <-c.ctx.Done():
			return
		}
		backoff = min(2*backoff, c.cfg.MaxBackoff)
	}
}

// jitter spreads reconnection attempts: a random duration in [d/2, d).
func jitter(d time.Duration) time.Duration {
	var b [8]byte
	_, _ = randRead(b[:])
	n := time.Duration(uint64(b[0])<<8|uint64(b[1])) * d / (2 << 16)
	return d/2 + n
}

// connect dials and authenticates.
func (c *Client) connect(url string) (*conn, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.CallTimeout)
	defer cancel()
	cn, err := dialConn(ctx, url, c.cfg.HTTPClient, c.log)
	if err != nil {
		return nil, err
	}
	if err := c.adoptClock(cn); err != nil {
		cn.close()
		return nil, err
	}
	if err := c.authenticate(ctx, cn); err != nil {
		cn.close()
		return nil, err
	}
	c.setConn(cn)
	return cn, nil
}

func (c *Client) setConn(cn *conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn = cn
	if cn != nil {
		close(c.connected)
	} else {
		c.connected = make(chan struct{})
	}
}

// presenceRecords signs an online and an offline presence record for the connection's gateway.
func (c *Client) presenceRecords(cn *conn) (on, off []byte, err error) {
	c.eng.mu.Lock()
	defer c.eng.mu.Unlock()
	seq := uint64(1)
	if b, ok := c.st.Get(bucketSelf, keyPresenceSeq); ok {
		seq, _ = strconv.ParseUint(string(b), 10, 64)
	}
	// The wall clock keeps sequence numbers rising even if the store was restored from an older backup.
	seq = max(seq, uint64(c.cfg.Now().UnixMilli()))
	if err := c.st.Put(bucketSelf, keyPresenceSeq, []byte(strconv.FormatUint(seq+2, 10))); err != nil {
		return nil, nil, err
	}
	now := c.cfg.Now()
	p := wire.Presence{Gateway: cn.hello.Gateway, Addrs: cn.hello.Addrs, Seq: seq, Expires: now.Add(wire.DefaultPresenceTTL), Online: true}
	if len(p.Addrs) > wire.MaxPresenceAddrs {
		p.Addrs = p.Addrs[:wire.MaxPresenceAddrs]
	}
	if on, err = wire.SignPresence(c.dev, p, now); err != nil {
		return nil, nil, err
	}
	p.Seq, p.Online = seq+1, false
	if off, err = wire.SignPresence(c.dev, p, now); err != nil {
		return nil, nil, err
	}
	return on, off, nil
}

// authenticate runs the auth operation on a fresh connection.
func (c *Client) authenticate(ctx context.Context, cn *conn) error {
	proof, err := e2ee.SignAuth(c.dev, cn.hello.GatewayID, cn.hello.Nonce, c.cfg.Now())
	if err != nil {
		return fmt.Errorf("client: auth: %w", err)
	}
	on, off, err := c.presenceRecords(cn)
	if err != nil {
		return fmt.Errorf("client: auth: %w", err)
	}
	id := c.dev.ID()
	req := wire.AuthRequest{DeviceID: id[:], Nonce: cn.hello.Nonce, Time: proof.Time.Unix(), Signature: proof.Sig, Presence: on, Offline: off}
	var resp wire.AuthResponse
	if err := cn.call(ctx, wire.OpAuth, req, &resp); err != nil {
		return err
	}
	return nil
}

// serve processes one connection's pushes until it ends.
func (c *Client) serve(cn *conn) error {
	refresh := time.NewTicker(wire.DefaultPresenceTTL / 2)
	defer refresh.Stop()
	for {
		for _, p := range cn.takePushes() {
			c.handlePush(cn, p)
		}
		select {
		case <-cn.pushReady:
		case <-cn.done:
			// Process what arrived before the connection dropped; acks are lost, so the grid redelivers it
			// and the seen set drops the repeats.
			for _, p := range cn.takePushes() {
				c.handlePush(cn, p)
			}
			return cn.Err()
		case <-refresh.C:
			if c.rotateKeys() {
				c.goAsync(func(ctx context.Context) {
					if err := c.publishOwnKey(ctx, cn); err != nil {
						c.log.Warn("rotated messaging key not published", "err", err)
					}
				})
			}
			on, off, err := c.presenceRecords(cn)
			if err == nil {
				ctx, cancel := context.WithTimeout(c.ctx, c.cfg.CallTimeout)
				err = cn.call(ctx, wire.OpPresence, wire.PresenceUpdate{Presence: on, Offline: off}, nil)
				cancel()
			}
			if err != nil {
				c.log.Warn("presence refresh failed", "err", err)
			}
		case <-c.ctx.Done():
			return ErrClosed
		}
	}
}

// keepAlive watches a connection until it ends: after PingInterval without a frame from the gateway it sends
// "ping" (any answer is a frame), and after twice that it abandons the connection, so that run moves to the next
// gateway. A path that died without closing would otherwise keep the client on a gateway that has withdrawn its
// presence, offline to the grid while it believes itself connected. It runs beside serve, which may be waiting
// on a call of its own (an ack) on the dead connection.
func (c *Client) keepAlive(ctx context.Context, cn *conn) {
	every := c.cfg.PingInterval
	t := time.NewTicker(max(every/2, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-cn.done:
			return
		case <-ctx.Done():
			return
		}
		switch s := cn.silence(); {
		case s >= 2*every:
			c.log.Info("gateway connection silent; leaving it", "gateway", cn.url, "silent", s)
			cn.abandon(fmt.Errorf("%w: %s: nothing received for %v, not even an answer to ping", ErrDisconnected, cn.url, s.Round(time.Millisecond)))
			return
		case s >= every:
			pctx, cancel := context.WithTimeout(ctx, every)
			_ = cn.call(pctx, wire.OpPing, struct{}{}, nil) // its answer resets the silence; its error says nothing more
			cancel()
		}
	}
}

func (c *Client) handlePush(cn *conn, p *wire.Push) {
	switch p.Name {
	case wire.PushEnvelope:
		var ep wire.EnvelopePush
		if err := wire.StrictUnmarshal(p.Body, &ep); err != nil {
			c.log.Warn("bad envelope push", "err", err)
			return
		}
		id, err1 := wire.ParseMessageID(ep.MessageID)
		from, err2 := wire.ParseDeviceID(ep.SenderDevice)
		if err1 != nil || err2 != nil {
			c.log.Warn("bad envelope push ids")
			return
		}
		t0 := time.Now()
		err := c.eng.receive(c.ctx, id, e2ee.DeviceID(from), ep.Ciphertext)
		if d := time.Since(t0); d > time.Second {
			c.log.Warn("slow receive", "took", d)
		}
		if err != nil {
			// Not acknowledged: the grid delivers it again later.
			c.log.Warn("envelope not processed; leaving it for redelivery", "err", err)
			return
		}
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.CallTimeout)
		defer cancel()
		if err := cn.call(ctx, wire.OpAck, wire.Ack{MessageID: id[:], SenderDevice: from[:]}, nil); err != nil {
			c.log.Warn("ack failed", "err", err)
		}
	default:
		c.handleOtherPush(p)
	}
}

// current returns the live connection, waiting for one until ctx ends.
func (c *Client) current(ctx context.Context) (*conn, error) {
	for {
		c.mu.Lock()
		cn, ready, closed := c.conn, c.connected, c.closed
		c.mu.Unlock()
		if closed {
			return nil, ErrClosed
		}
		if cn != nil && cn.Err() == nil {
			return cn, nil
		}
		if len(c.cfg.Gateways) == 0 {
			return nil, errors.New("client: no gateway configured")
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("client: waiting for a gateway connection: %w", ctx.Err())
		case <-c.ctx.Done():
			return nil, ErrClosed
		}
	}
}

// WaitConnected waits until the client is connected and authenticated to a gateway.
func (c *Client) WaitConnected(ctx context.Context) error {
	_, err := c.current(ctx)
	return err
}

// call runs one request on the current connection, retrying once on a fresh connection if the first one
// dropped under it.
func (c *Client) call(ctx context.Context, op string, body, out any) error {
	for try := 0; ; try++ {
		cn, err := c.current(ctx)
		if err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
		err = cn.call(cctx, op, body, out)
		cancel()
		if err == nil || try > 0 || !errors.Is(err, ErrDisconnected) {
			return err
		}
	}
}

// send implements transport over the gateway's "send" operation.
func (c *Client) send(ctx context.Context, id wire.MessageID, ciphertext []byte, to []e2ee.DeviceID) ([]DeliveryStatus, error) {
	req := wire.SendRequest{MessageID: id[:], Ciphertext: ciphertext}
	for _, d := range to {
		req.Recipients = append(req.Recipients, slices.Clone(d[:]))
	}
	var resp wire.SendResponse
	if err := c.call(ctx, wire.OpSend, req, &resp); err != nil {
		return nil, err
	}
	return c.statuses(id, to, ciphertext, &resp)
}

// limits implements transport: the limits the current gateway announced in its hello, or the grid's defaults
// when it announced none or the client is not connected.
func (c *Client) limits() gridLimits {
	lim := defaultGridLimits()
	c.mu.Lock()
	cn := c.conn
	c.mu.Unlock()
	if cn != nil {
		if n := cn.hello.Limits.MaxCiphertextBytes; n > 0 {
			lim.ciphertext = n
		}
		if n := cn.hello.Limits.MaxRecipients; n > 0 {
			lim.recipients = n
		}
	}
	return lim
}

// --- directory -----------------------------------------------------------------------------------------

// httpBase returns the HTTP base URL of the gateway in use.
func (c *Client) httpBase() (string, error) {
	c.mu.Lock()
	i := c.gw
	cn := c.conn
	c.mu.Unlock()
	var raw string
	switch {
	case cn != nil:
		raw = cn.url
	case len(c.cfg.Gateways) > 0:
		raw = c.cfg.Gateways[i%len(c.cfg.Gateways)]
	default:
		return "", errors.New("client: no gateway configured")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	}
	u.Path, u.RawQuery = "", ""
	return strings.TrimSuffix(u.String(), "/"), nil
}

// maxDirectoryResponse caps a directory answer (a record holds a chain of at most e2ee.MaxChainBytes plus
// receipts, base64 in JSON).
const maxDirectoryResponse = 8 << 20

type directoryAccount struct {
	Record []byte `json:"record"`
}

func (c *Client) lookup(ctx context.Context, path string) ([]byte, error) {
	var a directoryAccount
	if err := c.directoryGet(ctx, path, maxDirectoryResponse, &a); err != nil {
		return nil, err
	}
	return c.chainOfRecord(a.Record)
}

// errDirectoryGone is directoryGet's answer to HTTP 410: the directory knows the thing and refuses to serve
// it (a revoked device's key); the caller names what that means.
var errDirectoryGone = errors.New("client: directory: gone")

// directoryGet reads one JSON answer of at most limit bytes from the gateway's directory routes into v.
// A 404 is ErrNotFound and a 410 errDirectoryGone; any other failure names the path.
func (c *Client) directoryGet(ctx context.Context, path string, limit int64, v any) error {
	base, err := c.httpBase()
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("client: directory %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return fmt.Errorf("client: directory %s: %w", path, err)
	}
	if int64(len(body)) > limit {
		return fmt.Errorf("client: directory %s: answer over %d bytes", path, limit)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return fmt.Errorf("%w: %s", ErrNotFound, path)
	case http.StatusGone:
		return fmt.Errorf("%w: %s", errDirectoryGone, path)
	default:
		return fmt.Errorf("client: directory %s: HTTP %d: %s", path, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("client: directory %s: %w", path, err)
	}
	return nil
}

// chainOfRecord extracts the chain from a directory record ({1: version, 2: chain, 3: receipts}).
func (c *Client) chainOfRecord(rec []byte) ([]byte, error) {
	var m map[uint64]any
	if err := c.cd.dec.Unmarshal(rec, &m); err != nil {
		return nil, fmt.Errorf("client: directory record: %w", err)
	}
	v, _ := m[1].(uint64)
	chain, _ := m[2].([]byte)
	if v != 1 || len(chain) == 0 {
		return nil, fmt.Errorf("client: directory record: version %d, chain of %d bytes", v, len(chain))
	}
	return chain, nil
}

func (c *Client) accountChain(ctx context.Context, id e2ee.AccountID) ([]byte, error) {
	return c.lookup(ctx, "/v1/accounts/"+id.String())
}

func (c *Client) deviceChain(ctx context.Context, id e2ee.DeviceID) ([]byte, error) {
	return c.lookup(ctx, "/v1/devices/"+id.String())
}

func (c *Client) usernameChain(ctx context.Context, name string) ([]byte, error) {
	return c.lookup(ctx, "/v1/usernames/"+url.PathEscape(name))
}
