package keyregistry_test

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/keyregistry"
	"github.com/iagon/gridchat/node"
)

// testClock is a clock that tests can move forward.
type testClock struct{ off atomic.Int64 }

func (c *testClock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *testClock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// grid is a swarm of nodes with their directories.
type grid struct {
	t     testing.TB
	nodes []*node.Node
	clock *testClock
	opts  []gridtest.Option
}

func newGrid(t testing.TB, n int, opts ...gridtest.Option) *grid {
	t.Helper()
	return startGrid(t, n, append([]gridtest.Option{gridtest.InMemory()}, opts...))
}

// newGridOnDisk is newGrid with every node's state on disk (Pebble and its
// key publication log in t.TempDir()), so nodes can restart.
func newGridOnDisk(t testing.TB, n int, opts ...gridtest.Option) *grid {
	t.Helper()
	return startGrid(t, n, opts)
}

func startGrid(t testing.TB, n int, opts []gridtest.Option) *grid {
	t.Helper()
	clk := &testClock{}
	g := &grid{t: t, clock: clk}
	g.opts = append([]gridtest.Option{gridtest.Configure(func(i int, cfg *node.Config) {
		cfg.Directory.Validator.Now = clk.Now
		cfg.Directory.Limits.LookupTimeout = 5 * time.Second
		cfg.GossipRepair = node.GossipRepairSettings{Interval: 250 * time.Millisecond, Grace: 2 * time.Second,
			ReconnectGrace: 5 * time.Second, MaxBackoff: 10 * time.Second}
	})}, opts...)
	g.nodes = gridtest.Swarm(t, n, g.opts...)
	g.waitTopicMesh()
	return g
}

// restart closes node i and starts it again on its data directory.
func (g *grid) restart(i int) {
	g.t.Helper()
	old := g.nodes[i]
	dir := old.DataDir()
	if dir == "" {
		g.t.Fatal("restart needs a grid on disk")
	}
	if err := old.Close(); err != nil {
		g.t.Fatal(err)
	}
	cfg := gridtest.NodeConfig(g.t, i, append(g.opts, gridtest.Configure(func(_ int, c *node.Config) {
		c.DataDir = dir
		c.Bootstrap = nil
		for _, a := range g.nodes[(i+1)%len(g.nodes)].P2PAddrs() {
			c.Bootstrap = append(c.Bootstrap, a.String())
		}
	}))...)
	nd, err := node.New(context.Background(), cfg)
	if err != nil {
		g.t.Fatal(err)
	}
	g.t.Cleanup(func() { _ = nd.Close() })
	g.nodes[i] = nd
	if err := nd.DHT().WaitForPeers(ctxT(g.t), len(g.nodes)-1); err != nil {
		g.t.Fatal(err)
	}
}

func (g *grid) dir(i int) *keyregistry.Service { return g.nodes[i].Directory() }

func (g *grid) gatewayID(i int) []byte { return []byte(g.nodes[i].ID()) }

// waitTopicMesh waits until every node knows every other node (at most 8 in
// bigger swarms) as a subscriber of the directory topic, so announcements
// reach everyone.
func (g *grid) waitTopicMesh() {
	g.t.Helper()
	want := min(len(g.nodes)-1, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// A routing table may list a peer whose connection was since dropped (under load, or by the connection
	// manager); gossipsub only counts connected peers, so connect every pair first.
	connect := func(nd, other *node.Node) {
		_ = nd.Host().Connect(ctx, peer.AddrInfo{ID: other.ID(), Addrs: other.Host().Addrs()})
	}
	for _, nd := range g.nodes {
		for _, other := range g.nodes {
			if other != nd {
				connect(nd, other)
			}
		}
	}
	// A gossipsub stream that failed to open (a negotiation timeout on a loaded machine) is repaired by the
	// node's gossip watchdog, which the grid runs with short waits.
	deadline := time.Now().Add(60 * time.Second)
	for i, nd := range g.nodes {
		for len(nd.PubSub().ListPeers(keyregistry.Topic)) < want {
			if time.Now().After(deadline) {
				var conns []string
				for j, other := range g.nodes {
					if other != nd {
						conns = append(conns, fmt.Sprintf("node %d %v", j, nd.Host().Network().Connectedness(other.ID())))
					}
				}
				g.t.Fatalf("directory topic mesh not formed: node %d sees %d subscribed peers, want %d; pubsub peers %d; connections: %s",
					i, len(nd.PubSub().ListPeers(keyregistry.Topic)), want, len(nd.PubSub().ListPeers("")), strings.Join(conns, ", "))
			}
			time.Sleep(10 * time.Millisecond) // polling an external condition with a deadline
		}
	}
}

// waitAnnouncements waits until every node has accepted n announcements.
func (g *grid) waitAnnouncements(n float64) {
	g.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for i, nd := range g.nodes {
		for accepted(nd) < n {
			if time.Now().After(deadline) {
				g.t.Fatalf("node %d: %v announcements, want %v: %s", i, accepted(nd), n, g.announcements())
			}
			time.Sleep(10 * time.Millisecond) // polling for gossip with a deadline
		}
	}
}

func accepted(nd *node.Node) float64 {
	mfs, _ := nd.Metrics().Gather()
	for _, mf := range mfs {
		if mf.GetName() != "gridchat_directory_announcements_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == "accepted" {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// announcements reports every node's announcement counters.
func (g *grid) announcements() string {
	var b strings.Builder
	for i, nd := range g.nodes {
		mfs, _ := nd.Metrics().Gather()
		fmt.Fprintf(&b, "node %d topic peers %d:", i, len(nd.PubSub().ListPeers(keyregistry.Topic)))
		for _, mf := range mfs {
			if mf.GetName() != "gridchat_directory_announcements_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				fmt.Fprintf(&b, " %s=%v", m.GetLabel()[0].GetValue(), m.GetCounter().GetValue())
			}
		}
		b.WriteString("; ")
	}
	return b.String()
}

// user is a client: its devices and its local copy of its chain.
type user struct {
	devs  []*e2ee.DeviceKeys
	chain *e2ee.Chain
	id    e2ee.AccountID
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// register makes a new account and registers it through node i on
// connection conn.
func (g *grid) register(i int, conn string) (*user, *keyregistry.Account) {
	g.t.Helper()
	u, req := g.prepareRegistration(i, conn)
	a, err := g.dir(i).Register(ctxT(g.t), conn, req)
	if err != nil {
		g.t.Fatalf("register through node %d: %v", i, err)
	}
	return u, a
}

func (g *grid) prepareRegistration(i int, conn string) (*user, keyregistry.RegisterRequest) {
	g.t.Helper()
	now := g.clock.Now()
	dev, err := e2ee.NewDeviceKeys(now)
	if err != nil {
		g.t.Fatal(err)
	}
	c, err := e2ee.NewAccount(dev, now)
	if err != nil {
		g.t.Fatal(err)
	}
	grant, err := g.dir(i).Nonce(conn, dev.Public().Encode())
	if err != nil {
		g.t.Fatal(err)
	}
	proof, err := e2ee.SignRegistration(dev, g.gatewayID(i), grant.Nonce[:], now)
	if err != nil {
		g.t.Fatal(err)
	}
	ans, err := dev.AnswerKeyChallenge(g.gatewayID(i), grant.Nonce[:], grant.Challenge)
	if err != nil {
		g.t.Fatal(err)
	}
	u := &user{devs: []*e2ee.DeviceKeys{dev}, chain: c, id: c.AccountID()}
	return u, keyregistry.RegisterRequest{Nonce: grant.Nonce, Chain: c.Encode(), Proof: proof.Encode(), Answer: ans}
}

// link adds a new device to u's chain (signed by u's first current device)
// without submitting it.
func (g *grid) link(u *user) *e2ee.DeviceKeys {
	g.t.Helper()
	now := g.clock.Now()
	nd, err := e2ee.NewDeviceKeys(now)
	if err != nil {
		g.t.Fatal(err)
	}
	if _, err := u.chain.Append(u.devs[0], &e2ee.AddDevice{Cert: e2ee.NewDeviceCert(nd, u.id, now)}, now); err != nil {
		g.t.Fatal(err)
	}
	u.devs = append(u.devs, nd)
	return nd
}

func (g *grid) appendStmt(u *user, signer *e2ee.DeviceKeys, body e2ee.Body) {
	g.t.Helper()
	if _, err := u.chain.Append(signer, body, g.clock.Now()); err != nil {
		g.t.Fatal(err)
	}
}

func (g *grid) submit(i int, chain []byte) (*keyregistry.Account, error) {
	return g.dir(i).Append(ctxT(g.t), chain)
}

func (g *grid) mustSubmit(i int, u *user) *keyregistry.Account {
	g.t.Helper()
	a, err := g.submit(i, u.chain.Encode())
	if err != nil {
		g.t.Fatalf("append through node %d: %v", i, err)
	}
	return a
}

// forgetAll empties every node's directory cache, so lookups go to the DHT.
func (g *grid) forgetAll() {
	for _, nd := range g.nodes {
		nd.Directory().Forget()
	}
}

// checkHeld asserts that every node, asked through the DHT alone, returns
// the account with exactly the statements of want.
func (g *grid) checkHeld(id e2ee.AccountID, want *e2ee.Chain) {
	g.t.Helper()
	g.forgetAll()
	for i := range g.nodes {
		a, err := g.dir(i).LookupAccount(ctxT(g.t), id)
		if err != nil {
			g.t.Fatalf("node %d: lookup: %v", i, err)
		}
		if a.Length != uint64(want.Len()) || a.Head != want.Head() {
			g.t.Fatalf("node %d holds %d statements (head %x), want %d (head %x)", i, a.Length, a.Head[:4], want.Len(), want.Head())
		}
	}
}

// sameDevices asserts that a lists exactly the devices, keys and revocations
// of the replayed chain c.
func sameDevices(t testing.TB, a *keyregistry.Account, c *e2ee.Chain) {
	t.Helper()
	st, err := e2ee.Replay(c)
	if err != nil {
		t.Fatal(err)
	}
	if a.ID != st.Account || a.Username != st.Username {
		t.Fatalf("account %s %q, want %s %q", a.ID, a.Username, st.Account, st.Username)
	}
	if len(a.Devices) != len(st.Devices)+len(st.Revoked) {
		t.Fatalf("%d devices, want %d", len(a.Devices), len(st.Devices)+len(st.Revoked))
	}
	for _, d := range st.Devices {
		got, ok := a.Device(d.ID)
		if !ok || got.Revoked || !got.Public.Equal(d.Public) || got.Added != d.AddedAt {
			t.Fatalf("device %s: got %+v, want current with keys as signed", d.ID, got)
		}
	}
	for _, d := range st.Revoked {
		got, ok := a.Device(d.ID)
		if !ok || !got.Revoked || got.RevokedAt != d.RevokedAt || !got.Public.Equal(d.Public) {
			t.Fatalf("device %s: got %+v, want revoked at %d", d.ID, got, d.RevokedAt)
		}
	}
}

func TestAccountRegisteredOnNode1IsFoundByIDAndUsernameOnNode5(t *testing.T) {
	g := newGrid(t, 5)
	u, _ := g.register(0, "conn-1")
	g.link(u)
	g.appendStmt(u, u.devs[0], &e2ee.SetUsername{Username: "alice.liddell"})
	g.mustSubmit(0, u)

	a, err := g.dir(4).LookupAccount(ctxT(t), u.id)
	if err != nil {
		t.Fatal(err)
	}
	sameDevices(t, a, u.chain)
	if a.Length != 3 || a.Username != "alice.liddell" {
		t.Fatalf("account by ID: length %d, username %q", a.Length, a.Username)
	}
	g.forgetAll()
	b, err := g.dir(4).LookupUsername(ctxT(t), "Alice.Liddell")
	if err != nil {
		t.Fatal(err)
	}
	if b.ID != u.id {
		t.Fatalf("username resolves to %s, want %s", b.ID, u.id)
	}
	sameDevices(t, b, u.chain)
	for _, dev := range u.devs {
		g.forgetAll()
		c, d, err := g.dir(4).LookupDevice(ctxT(t), dev.ID())
		if err != nil {
			t.Fatal(err)
		}
		if c.ID != u.id || !d.Public.Equal(dev.Public()) || d.Revoked {
			t.Fatalf("device %s: account %s, device %+v", dev.ID(), c.ID, d)
		}
	}
}

func TestLinkAndRevokeReachEveryNodeByGossipAndAfterColdRestart(t *testing.T) {
	g := newGridOnDisk(t, 5)
	u, _ := g.register(0, "conn-1")
	// The registration's announcement reaching every node shows the topic
	// mesh is up; the timed part starts after it.
	g.waitAnnouncements(1)
	// Warm every cache, so only gossip can make the change visible in time.
	for i := range g.nodes {
		if _, err := g.dir(i).LookupAccount(ctxT(t), u.id); err != nil {
			t.Fatal(err)
		}
	}

	waitAll := func(what string, ok func(a *keyregistry.Account) bool) {
		t.Helper()
		// Cached entries live 5 minutes on the grid's fake clock, so only gossip can make the change visible;
		// the deadline only bounds gossip latency on a loaded machine.
		deadline := time.Now().Add(20 * time.Second)
		for i := range g.nodes {
			for {
				a, err := g.dir(i).LookupAccount(ctxT(t), u.id)
				if err == nil && ok(a) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("node %d did not see %s within 20 s (err %v); announcements: %s", i, what, err, g.announcements())
				}
				time.Sleep(20 * time.Millisecond) // polling for gossip with a deadline
			}
		}
	}

	linked := g.link(u)
	g.mustSubmit(1, u)
	waitAll("the linked device", func(a *keyregistry.Account) bool {
		d, ok := a.Device(linked.ID())
		return ok && !d.Revoked
	})

	g.appendStmt(u, u.devs[0], &e2ee.RevokeDevice{Device: linked.ID()})
	g.mustSubmit(2, u)
	waitAll("the revocation", func(a *keyregistry.Account) bool {
		d, ok := a.Device(linked.ID())
		return ok && d.Revoked
	})
	for i := range g.nodes {
		auth, err := g.dir(i).AuthDevice(ctxT(t), linked.ID())
		if err != nil || !auth.Revoked || auth.Account != u.id {
			t.Fatalf("node %d: auth of revoked device: %+v, %v", i, auth, err)
		}
	}

	// Restart node 2 on its data directory (its cache starts empty) and empty
	// every other cache: the DHT alone must give the link and the revocation.
	g.restart(2)
	g.forgetAll()
	for i := range g.nodes {
		a, err := g.dir(i).LookupAccount(ctxT(t), u.id)
		if err != nil {
			t.Fatalf("cold node %d: %v", i, err)
		}
		sameDevices(t, a, u.chain)
		_, dev, err := g.dir(i).LookupDevice(ctxT(t), linked.ID())
		if err != nil || !dev.Revoked {
			t.Fatalf("cold node %d: device lookup: %+v, %v", i, dev, err)
		}
	}
}

// mustRefuse asserts that err carries the sentinel want.
func mustRefuse(t testing.TB, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got %v, want %v", what, err, want)
	}
	if keyregistry.CodeOf(err) == keyregistry.CodeInternal {
		t.Fatalf("%s: no stable code for %v", what, err)
	}
}

func TestRefusedUpdatesLeaveNoTrace(t *testing.T) {
	g := newGrid(t, 3)
	u, _ := g.register(0, "conn-u")
	g.link(u)
	g.mustSubmit(0, u)
	accepted := u.chain.Encode()
	acceptedChain, _ := e2ee.DecodeChain(accepted)

	t.Run("forged signature", func(t *testing.T) {
		c, _ := e2ee.DecodeChain(accepted)
		if _, err := c.Append(u.devs[0], &e2ee.SetProfile{Profile: e2ee.Profile{Name: "Mallory"}}, g.clock.Now()); err != nil {
			t.Fatal(err)
		}
		b := c.Encode()
		b[len(b)-1] ^= 1 // last byte of the last statement's signature
		_, err := g.submit(1, b)
		mustRefuse(t, "forged signature", err, keyregistry.ErrBadSignature)
		// Put straight into the DHT, bypassing the directory: refused too.
		rec, err := (&keyregistry.Record{Chain: b}).Encode()
		if err != nil {
			t.Fatal(err)
		}
		if err := g.nodes[1].DHT().PutValue(ctxT(t), keyregistry.AccountKey(u.id), rec); err == nil {
			t.Fatal("DHT accepted a forged record")
		}
		g.checkHeld(u.id, acceptedChain)
	})

	t.Run("statement signed by a revoked device", func(t *testing.T) {
		c, _ := e2ee.DecodeChain(accepted)
		revoked := u.devs[1]
		if _, err := c.Append(u.devs[0], &e2ee.RevokeDevice{Device: revoked.ID()}, g.clock.Now()); err != nil {
			t.Fatal(err)
		}
		b := appendForged(t, c, revoked, e2ee.KindSetUsername, lenPrefixed([]byte("mallory")), g.clock.Now())
		_, err := g.submit(1, b)
		mustRefuse(t, "revoked signer", err, keyregistry.ErrRevokedSigner)
		g.checkHeld(u.id, acceptedChain)
	})

	t.Run("rollback", func(t *testing.T) {
		short, _ := e2ee.DecodeChain(accepted)
		stmts := short.Statements()
		genesisOnly := chainOf(t, stmts[:1])
		_, err := g.submit(2, genesisOnly)
		mustRefuse(t, "rollback", err, keyregistry.ErrRollback)
		g.checkHeld(u.id, acceptedChain)
	})

	t.Run("fork", func(t *testing.T) {
		a, _ := e2ee.DecodeChain(accepted)
		b, _ := e2ee.DecodeChain(accepted)
		g.appendStmt(&user{chain: a}, u.devs[0], &e2ee.SetProfile{Profile: e2ee.Profile{Name: "one"}})
		g.appendStmt(&user{chain: b}, u.devs[1], &e2ee.SetProfile{Profile: e2ee.Profile{Name: "two"}})
		if _, err := g.submit(1, a.Encode()); err != nil {
			t.Fatal(err)
		}
		_, err := g.submit(2, b.Encode())
		mustRefuse(t, "fork", err, keyregistry.ErrFork)
		g.checkHeld(u.id, a)
		accepted = a.Encode()
		acceptedChain = a
	})

	t.Run("username held by another account", func(t *testing.T) {
		u.chain, _ = e2ee.DecodeChain(accepted)
		g.appendStmt(u, u.devs[0], &e2ee.SetUsername{Username: "queen.of.hearts"})
		g.mustSubmit(0, u)
		accepted = u.chain.Encode()
		acceptedChain = u.chain

		v, _ := g.register(1, "conn-v")
		before := v.chain.Encode()
		beforeChain, _ := e2ee.DecodeChain(before)
		g.appendStmt(v, v.devs[0], &e2ee.SetUsername{Username: "queen.of.hearts"})
		_, err := g.submit(2, v.chain.Encode())
		mustRefuse(t, "username taken", err, keyregistry.ErrUsernameTaken)
		g.checkHeld(v.id, beforeChain)
		g.forgetAll()
		for i := range g.nodes {
			a, err := g.dir(i).LookupUsername(ctxT(t), "queen.of.hearts")
			if err != nil || a.ID != u.id {
				t.Fatalf("node %d: username now resolves to %v, %v", i, a, err)
			}
		}
	})

	t.Run("too large", func(t *testing.T) {
		big := make([]byte, keyregistry.MaxRecordSize+1)
		_, err := g.submit(0, big)
		mustRefuse(t, "too large", err, keyregistry.ErrTooLarge)
		// A node that bypasses the directory and puts an oversized value
		// straight into the DHT is refused by every validator too.
		if err := g.nodes[1].DHT().PutValue(ctxT(t), keyregistry.AccountKey(u.id), big); err == nil {
			t.Fatal("DHT accepted an oversized directory record")
		}
		g.checkHeld(u.id, acceptedChain)
	})
}

func TestRegistrationNonceRules(t *testing.T) {
	g := newGrid(t, 2)
	d := g.dir(0)

	t.Run("without the device's keys", func(t *testing.T) {
		_, err := d.Nonce("c0", nil)
		mustRefuse(t, "nonce without a device", err, keyregistry.ErrMalformed)
	})
	t.Run("replayed", func(t *testing.T) {
		_, req := g.prepareRegistration(0, "c1")
		if _, err := d.Register(ctxT(t), "c1", req); err != nil {
			t.Fatal(err)
		}
		_, err := d.Register(ctxT(t), "c1", req)
		mustRefuse(t, "replayed nonce", err, keyregistry.ErrNonceReplayed)
	})
	t.Run("expired", func(t *testing.T) {
		u, req := g.prepareRegistration(0, "c2")
		g.clock.Advance(keyregistry.DefaultLimits().NonceTTL + time.Second)
		_, err := d.Register(ctxT(t), "c2", req)
		mustRefuse(t, "expired nonce", err, keyregistry.ErrNonceExpired)
		if _, err := g.dir(1).LookupAccount(ctxT(t), u.id); !errors.Is(err, keyregistry.ErrNotFound) {
			t.Fatalf("refused account is stored: %v", err)
		}
	})
	t.Run("other connection", func(t *testing.T) {
		u, req := g.prepareRegistration(0, "c3")
		_, err := d.Register(ctxT(t), "c4", req)
		mustRefuse(t, "nonce from another connection", err, keyregistry.ErrNonceOtherConn)
		if _, err := g.dir(1).LookupAccount(ctxT(t), u.id); !errors.Is(err, keyregistry.ErrNotFound) {
			t.Fatalf("refused account is stored: %v", err)
		}
	})
	t.Run("forged registration proof", func(t *testing.T) {
		u, req := g.prepareRegistration(0, "c5")
		req.Proof[len(req.Proof)-1] ^= 1
		_, err := d.Register(ctxT(t), "c5", req)
		mustRefuse(t, "forged proof", err, keyregistry.ErrBadSignature)
		if _, err := g.dir(1).LookupAccount(ctxT(t), u.id); !errors.Is(err, keyregistry.ErrNotFound) {
			t.Fatalf("refused account is stored: %v", err)
		}
	})
	t.Run("wrong key challenge answer", func(t *testing.T) {
		_, req := g.prepareRegistration(0, "c6")
		req.Answer[0] ^= 1
		_, err := d.Register(ctxT(t), "c6", req)
		mustRefuse(t, "wrong challenge answer", err, keyregistry.ErrBadProof)
	})
}

// lenPrefixed returns p with a big-endian uint32 length prefix.
func lenPrefixed(p []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(p))), p...)
}

// signingKey extracts a device's Ed25519 key from its private encoding
// (docs/PROTOCOL.md §1.5: 11-byte header, then the 32-byte seed).
func signingKey(t testing.TB, dk *e2ee.DeviceKeys) ed25519.PrivateKey {
	t.Helper()
	enc := dk.Encode()
	return ed25519.NewKeyFromSeed(enc[11 : 11+32])
}

// appendForged appends to c a statement signed by signer whatever c's state
// says about signer (the client library refuses to), and returns the
// encoded chain.
func appendForged(t testing.TB, c *e2ee.Chain, signer *e2ee.DeviceKeys, kind e2ee.StatementKind, body []byte, now time.Time) []byte {
	t.Helper()
	stmts := c.Statements()
	last := stmts[len(stmts)-1]
	prev := last.Hash()
	signerID := signer.ID()
	tr := []byte{0x04, 0x01, 0x01, 0x00, 0x01, 0x64, 0x7a, 0x00, 0x01, 0x00, 0x03} // tag, version, suite
	tr = append(tr, byte(kind))
	tr = binary.BigEndian.AppendUint64(tr, uint64(len(stmts)))
	tr = append(tr, prev[:]...)
	tr = binary.BigEndian.AppendUint64(tr, uint64(now.Unix()))
	tr = append(tr, signerID[:]...)
	tr = append(tr, lenPrefixed(body)...)
	sig, err := signingKey(t, signer).Sign(nil, tr, &ed25519.Options{Context: "gridchat/v1/sigchain/" + kind.String()})
	if err != nil {
		t.Fatal(err)
	}
	raw := append(tr, sig...)
	if _, err := e2ee.DecodeStatement(raw); err != nil {
		t.Fatalf("forged statement does not decode: %v", err)
	}
	encs := make([][]byte, 0, len(stmts)+1)
	for _, s := range stmts {
		encs = append(encs, s.Encode())
	}
	return chainBytes(append(encs, raw))
}

// chainBytes encodes statements as a chain (docs/PROTOCOL.md §1: header,
// uint32 count, length-prefixed statements).
func chainBytes(stmts [][]byte) []byte {
	b := []byte{0x05, 0x01, 0x01, 0x00, 0x01, 0x64, 0x7a, 0x00, 0x01, 0x00, 0x03}
	b = binary.BigEndian.AppendUint32(b, uint32(len(stmts)))
	for _, s := range stmts {
		b = append(b, lenPrefixed(s)...)
	}
	return b
}

func chainOf(t testing.TB, stmts []*e2ee.Statement) []byte {
	t.Helper()
	var encs [][]byte
	for _, s := range stmts {
		encs = append(encs, s.Encode())
	}
	b := chainBytes(encs)
	if _, err := e2ee.DecodeChain(b); err != nil {
		t.Fatalf("chain encoding: %v", err)
	}
	return b
}
