package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/iagon/gridchat/client/store"
	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/wire"
)

// These tests run the conversation state machine of real devices (real keys, chains, sessions and stores)
// without a network: memNet holds the accounts' real chains and signed messaging keys, and queues envelopes
// per device until the test delivers them.

type memEnv struct {
	id   wire.MessageID
	from e2ee.DeviceID
	ct   []byte
}

type memNet struct {
	mu     sync.Mutex
	chains map[e2ee.AccountID]*e2ee.Chain
	byDev  map[e2ee.DeviceID]e2ee.AccountID
	names  map[string]e2ee.AccountID
	keys   map[e2ee.DeviceID]*e2ee.SignedMessagingKey
	inbox  map[e2ee.DeviceID][]memEnv
	// drop, if set, decides to lose an envelope on its way to a device.
	drop func(to e2ee.DeviceID, ct []byte) bool
	// lim, if set, is the grid's limits on one send (else the defaults); larger sends are refused.
	lim gridLimits
	// sent counts the sends and their envelope bytes per recipient device.
	sends   int
	devSent map[e2ee.DeviceID]int
}

func newMemNet() *memNet {
	return &memNet{chains: map[e2ee.AccountID]*e2ee.Chain{}, byDev: map[e2ee.DeviceID]e2ee.AccountID{},
		names: map[string]e2ee.AccountID{}, keys: map[e2ee.DeviceID]*e2ee.SignedMessagingKey{}, inbox: map[e2ee.DeviceID][]memEnv{},
		devSent: map[e2ee.DeviceID]int{}}
}

func (n *memNet) publish(c *e2ee.Chain) {
	n.mu.Lock()
	defer n.mu.Unlock()
	st, err := e2ee.Replay(c)
	if err != nil {
		panic(err)
	}
	n.chains[st.Account] = c
	for _, d := range st.Devices {
		n.byDev[d.ID] = st.Account
	}
	for _, d := range st.Revoked {
		n.byDev[d.ID] = st.Account
	}
	if st.Username != "" {
		n.names[st.Username] = st.Account
	}
}

func (n *memNet) accountChain(_ context.Context, id e2ee.AccountID) ([]byte, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	c, ok := n.chains[id]
	if !ok {
		return nil, ErrNotFound
	}
	return c.Encode(), nil
}

func (n *memNet) deviceChain(ctx context.Context, id e2ee.DeviceID) ([]byte, error) {
	n.mu.Lock()
	a, ok := n.byDev[id]
	n.mu.Unlock()
	if !ok {
		return nil, ErrNotFound
	}
	return n.accountChain(ctx, a)
}

func (n *memNet) usernameChain(ctx context.Context, name string) ([]byte, error) {
	n.mu.Lock()
	a, ok := n.names[name]
	n.mu.Unlock()
	if !ok {
		return nil, ErrNotFound
	}
	return n.accountChain(ctx, a)
}

func (n *memNet) recipientKey(_ context.Context, dev e2ee.DevicePublic) (e2ee.RecipientKey, error) {
	n.mu.Lock()
	k := n.keys[dev.ID()]
	n.mu.Unlock()
	if k == nil {
		return e2ee.RecipientKey{}, ErrKeyUnavailable
	}
	return e2ee.NewRecipientKey(dev, k, time.Now())
}

func (n *memNet) send(_ context.Context, id wire.MessageID, ct []byte, to []e2ee.DeviceID) ([]DeliveryStatus, error) {
	return nil, errors.New("memNet.send needs a sender; use device.send")
}

type device struct {
	t     testing.TB
	net   *memNet
	keys  *e2ee.DeviceKeys
	eng   *engine
	st    *store.Store
	tasks []func(ctx context.Context)
	mu    sync.Mutex
	// dir and storeKey are where st lives, to open it again (a restart).
	dir      string
	storeKey []byte
}

type devTransport struct{ d *device }

func (tr devTransport) limits() gridLimits {
	n := tr.d.net
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.lim == (gridLimits{}) {
		return defaultGridLimits()
	}
	return n.lim
}

func (tr devTransport) send(_ context.Context, id wire.MessageID, ct []byte, to []e2ee.DeviceID) ([]DeliveryStatus, error) {
	lim := tr.limits()
	n := tr.d.net
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(ct) > lim.ciphertext || len(to) > lim.recipients {
		return nil, fmt.Errorf("%w: %d bytes to %d devices", wire.ErrTooLarge, len(ct), len(to))
	}
	n.sends++
	out := make([]DeliveryStatus, len(to))
	for i, d := range to {
		n.devSent[d] += len(ct)
		out[i] = DeliveryStatus{Device: d, Status: wire.StatusStored}
		if n.drop != nil && n.drop(d, ct) {
			continue
		}
		n.inbox[d] = append(n.inbox[d], memEnv{id: id, from: tr.d.keys.ID(), ct: ct})
	}
	return out, nil
}

func newDevice(t testing.TB, net *memNet, keys *e2ee.DeviceKeys, account e2ee.AccountID, policy e2ee.RenewalPolicy) *device {
	t.Helper()
	k := make([]byte, store.KeySize)
	rand.Read(k)
	dir := t.TempDir()
	st, err := store.Open(dir, k, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	d := newDeviceOn(t, net, keys, account, policy, st)
	d.dir, d.storeKey = dir, k
	return d
}

// newDeviceOn makes a device of account with keys whose state is in st.
func newDeviceOn(t testing.TB, net *memNet, keys *e2ee.DeviceKeys, account e2ee.AccountID, policy e2ee.RenewalPolicy, st *store.Store) *device {
	t.Helper()
	cd, err := newCodec()
	if err != nil {
		t.Fatal(err)
	}
	d := &device{t: t, net: net, keys: keys, st: st}
	if policy == (e2ee.RenewalPolicy{}) {
		policy = e2ee.DefaultRenewalPolicy()
	}
	d.eng = &engine{
		cfg: engineConfig{now: time.Now, policy: policy, sentKeep: time.Hour, sentMax: 1000, seenKeep: time.Hour,
			resendEvery: time.Millisecond, log: slog.New(slog.DiscardHandler)},
		st: st, cd: cd, dev: keys, self: account, accts: newAccounts(net, st, time.Now, 0), tr: devTransport{d}, keys: net,
		ev: newEventQueue(), asked: map[string]time.Time{}, served: map[e2ee.DeviceID][]time.Time{},
		onKeys: func(e2ee.DevicePublic, [][]byte, bool) {},
	}
	d.eng.async = func(f func(ctx context.Context)) {
		d.mu.Lock()
		d.tasks = append(d.tasks, f)
		d.mu.Unlock()
	}
	net.mu.Lock()
	net.keys[keys.ID()] = keys.MessagingKey()
	net.mu.Unlock()
	return d
}

// newAccount registers an account with one device and a username.
func newAccount(t *testing.T, net *memNet, name string, policy e2ee.RenewalPolicy) (*device, *e2ee.Chain) {
	dk, err := e2ee.NewDeviceKeys(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, err := e2ee.NewAccount(dk, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Append(dk, &e2ee.SetUsername{Username: name}, time.Now()); err != nil {
		t.Fatal(err)
	}
	net.publish(c)
	return newDevice(t, net, dk, c.AccountID(), policy), c
}

func newBenchAccount(t testing.TB, net *memNet, name string) (*device, *e2ee.Chain) {
	dk, err := e2ee.NewDeviceKeys(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, err := e2ee.NewAccount(dk, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	net.publish(c)
	d := newDevice(t, net, dk, c.AccountID(), e2ee.RenewalPolicy{})
	d.eng.accts.ttl = time.Hour // a cached directory, as in a running client
	return d, c
}

// linkDevice adds a device to an account whose chain is c, signed by signer.
func linkDevice(t *testing.T, net *memNet, c *e2ee.Chain, signer *device) *device {
	dk, err := e2ee.NewDeviceKeys(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert := e2ee.NewDeviceCert(dk, c.AccountID(), time.Now())
	if _, err := c.Append(signer.keys, &e2ee.AddDevice{Cert: cert}, time.Now()); err != nil {
		t.Fatal(err)
	}
	net.publish(c)
	return newDevice(t, net, dk, c.AccountID(), signer.eng.cfg.policy)
}

// deliver processes everything queued for the given devices, and the sends that processing triggers, until
// nothing moves.
func deliver(t *testing.T, devs ...*device) {
	t.Helper()
	for round := 0; round < 100; round++ {
		moved := false
		for _, d := range devs {
			d.net.mu.Lock()
			q := d.net.inbox[d.keys.ID()]
			delete(d.net.inbox, d.keys.ID())
			d.net.mu.Unlock()
			for _, e := range q {
				moved = true
				if err := d.eng.receive(context.Background(), e.id, e.from, e.ct); err != nil {
					t.Fatalf("receive: %v", err)
				}
			}
			d.mu.Lock()
			tasks := d.tasks
			d.tasks = nil
			d.mu.Unlock()
			for _, f := range tasks {
				moved = true
				f(context.Background())
			}
		}
		if !moved {
			return
		}
	}
	t.Fatal("deliver: still moving after 100 rounds")
}

func texts(t *testing.T, d *device, conv e2ee.ConversationID) []string {
	t.Helper()
	ms, err := d.eng.messages(conv)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range ms {
		if m.Type == PayloadText {
			out = append(out, m.Text)
		}
	}
	return out
}

func startDirect(t *testing.T, d *device, peer e2ee.AccountID) e2ee.ConversationID {
	id := DirectConversationID(d.eng.self, peer)
	if err := d.eng.ensureConv(id, &convRecord{Kind: Direct, Peer: peer[:]}); err != nil {
		t.Fatal(err)
	}
	return id
}

func sendText(t *testing.T, d *device, conv e2ee.ConversationID, text string) uint64 {
	t.Helper()
	seq, err := d.eng.send(context.Background(), conv, &payload{Type: PayloadText, Text: text}, sendOpts{})
	if err != nil {
		t.Fatalf("send %q: %v", text, err)
	}
	return seq
}

func gaps(d *device) []*GapEvent {
	var out []*GapEvent
	for _, ev := range d.eng.ev.take() {
		if g, ok := ev.(*GapEvent); ok {
			out = append(out, g)
		}
	}
	return out
}

func TestDirectConversationReachesEveryDeviceOfBothAccounts(t *testing.T) {
	net := newMemNet()
	a1, achain := newAccount(t, net, "alice", e2ee.RenewalPolicy{})
	a2 := linkDevice(t, net, achain, a1)
	b1, _ := newAccount(t, net, "bob", e2ee.RenewalPolicy{})

	conv := startDirect(t, a1, b1.eng.self)
	sendText(t, a1, conv, "hi bob")
	deliver(t, a1, a2, b1)
	sendText(t, b1, conv, "hi alice")
	deliver(t, a1, a2, b1)
	sendText(t, a2, conv, "from my laptop")
	deliver(t, a1, a2, b1)

	want := []string{"hi bob", "hi alice", "from my laptop"}
	for i, d := range []*device{a1, a2, b1} {
		if got := texts(t, d, conv); !slices.Equal(got, want) {
			t.Errorf("device %d shows %q, want %q", i, got, want)
		}
	}
	// Alice's second device learnt the conversation from her first device's message.
	c, err := a2.eng.conversation(conv)
	if err != nil || c.Kind != Direct || c.Peer != b1.eng.self {
		t.Fatalf("a2's conversation = %+v, %v", c, err)
	}
}

func TestSessionRenewsAfterMessageCount(t *testing.T) {
	net := newMemNet()
	a, _ := newAccount(t, net, "alice", e2ee.RenewalPolicy{MaxMessages: 3})
	b, _ := newAccount(t, net, "bob", e2ee.RenewalPolicy{MaxMessages: 3})
	conv := startDirect(t, a, b.eng.self)
	var epochs []uint64
	for i := range 7 {
		sendText(t, a, conv, fmt.Sprint(i))
		sr, _ := a.eng.senderRec(conv)
		epochs = append(epochs, sr.Epoch)
	}
	deliver(t, a, b)
	if want := []uint64{1, 1, 1, 2, 2, 2, 3}; !slices.Equal(epochs, want) {
		t.Fatalf("epochs %v, want %v", epochs, want)
	}
	if got := texts(t, b, conv); len(got) != 7 {
		t.Fatalf("bob got %d messages across renewals, want 7", len(got))
	}
}

func TestLostMessageIsReportedAsGapAndResent(t *testing.T) {
	net := newMemNet()
	a, _ := newAccount(t, net, "alice", e2ee.RenewalPolicy{})
	b, _ := newAccount(t, net, "bob", e2ee.RenewalPolicy{})
	conv := startDirect(t, a, b.eng.self)
	sendText(t, a, conv, "one")
	deliver(t, a, b)
	dropped := false
	net.drop = func(to e2ee.DeviceID, _ []byte) bool {
		if to == b.keys.ID() && !dropped {
			dropped = true
			return true
		}
		return false
	}
	sendText(t, a, conv, "two") // lost on the way
	net.drop = nil
	sendText(t, a, conv, "three")
	b.eng.ev.take()
	// Deliver "three" only: Bob sees the gap.
	net.mu.Lock()
	q := net.inbox[b.keys.ID()]
	delete(net.inbox, b.keys.ID())
	net.mu.Unlock()
	for _, e := range q {
		if err := b.eng.receive(context.Background(), e.id, e.from, e.ct); err != nil {
			t.Fatal(err)
		}
	}
	g := gaps(b)
	if len(g) != 1 || g[0].Reason != GapMissing || !slices.Equal(g[0].Seqs, []uint64{2}) || g[0].SenderDevice != a.keys.ID() {
		t.Fatalf("gap events %+v, want one missing [2] from alice", g)
	}
	// The resend request reaches Alice, whose device resends from its sent store.
	deliver(t, a, b)
	if got, want := texts(t, b, conv), []string{"one", "two", "three"}; !slices.Equal(got, want) {
		t.Fatalf("bob shows %q, want %q", got, want)
	}
}

func TestRedeliveredEnvelopeIsSurfacedOnce(t *testing.T) {
	net := newMemNet()
	a, _ := newAccount(t, net, "alice", e2ee.RenewalPolicy{})
	b, _ := newAccount(t, net, "bob", e2ee.RenewalPolicy{})
	conv := startDirect(t, a, b.eng.self)
	sendText(t, a, conv, "once")
	net.mu.Lock()
	q := slices.Clone(net.inbox[b.keys.ID()])
	net.mu.Unlock()
	deliver(t, a, b)
	// The grid delivers the same envelope again (a replica missed the delete), then a resend of it arrives
	// under a new message ID.
	for _, e := range q {
		if err := b.eng.receive(context.Background(), e.id, e.from, e.ct); err != nil {
			t.Fatal(err)
		}
	}
	aid := a.keys.ID()
	a.eng.answerResend(context.Background(), conv, b.keys.ID(), &resendBody{Sender: aid[:], Seqs: []uint64{1}})
	deliver(t, a, b)
	msgs := 0
	for _, ev := range b.eng.ev.take() {
		if _, ok := ev.(*MessageEvent); ok {
			msgs++
		}
	}
	if msgs != 1 || len(texts(t, b, conv)) != 1 {
		t.Fatalf("%d message events and %d stored messages, want 1 and 1", msgs, len(texts(t, b, conv)))
	}
}

func TestMessageBeforeItsKeyDistributionWaitsForIt(t *testing.T) {
	net := newMemNet()
	a, _ := newAccount(t, net, "alice", e2ee.RenewalPolicy{})
	b, _ := newAccount(t, net, "bob", e2ee.RenewalPolicy{})
	conv := startDirect(t, a, b.eng.self)
	sendText(t, a, conv, "first")
	sendText(t, a, conv, "second")
	net.mu.Lock()
	q := net.inbox[b.keys.ID()]
	net.inbox[b.keys.ID()] = []memEnv{q[1], q[0]} // the grid reorders them
	net.mu.Unlock()
	deliver(t, a, b)
	if got, want := texts(t, b, conv), []string{"first", "second"}; !slices.Equal(got, want) {
		t.Fatalf("bob shows %q, want %q", got, want)
	}
}

func TestRemovedGroupMemberCannotReadLaterMessages(t *testing.T) {
	net := newMemNet()
	var devs []*device
	var accts []e2ee.AccountID
	for _, name := range []string{"alice", "bob", "carol"} {
		d1, c := newAccount(t, net, name, e2ee.RenewalPolicy{})
		d2 := linkDevice(t, net, c, d1)
		devs = append(devs, d1, d2)
		accts = append(accts, c.AccountID())
	}
	admin := devs[0]
	conv, g, rec := startTestGroup(t, admin, devs...)
	sendText(t, devs[2], conv, "bob says hi")
	deliver(t, devs...)
	for i, d := range devs {
		if got := texts(t, d, conv); !slices.Equal(got, []string{"bob says hi"}) {
			t.Fatalf("device %d shows %q", i, got)
		}
	}
	before, _ := devs[2].eng.senderRec(conv)

	// Alice removes Carol.
	next := *g
	next.Members = slices.DeleteFunc(slices.Clone(g.Members), func(a e2ee.AccountID) bool { return a == accts[2] })
	next.Version, next.Prev, next.Time = 2, mustGroupHash(t, admin.eng.cd, rec), time.Now().UTC()
	rec2, err := admin.eng.cd.signGroupState(admin.keys, &next)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := admin.eng.conv(conv)
	r.Group = rec2
	if err := admin.st.Update(func(b *store.Batch) error { return admin.eng.putConv(b, conv, r) }); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.eng.send(context.Background(), conv, &payload{Type: PayloadGroupState, Group: rec2}, sendOpts{}); err != nil {
		t.Fatal(err)
	}
	deliver(t, devs...)
	sendText(t, devs[2], conv, "bob after removal")
	deliver(t, devs...)
	after, _ := devs[2].eng.senderRec(conv)
	if after.Epoch <= before.Epoch {
		t.Fatalf("bob's session epoch %d → %d: no new session after the removal", before.Epoch, after.Epoch)
	}
	for _, m := range after.Members {
		for _, carol := range devs[4:] {
			if e2ee.DeviceID(m) == carol.keys.ID() {
				t.Fatal("the new session includes a removed member's device")
			}
		}
	}
	for i, d := range devs[:4] {
		if got := texts(t, d, conv); !slices.Equal(got, []string{"bob says hi", "bob after removal"}) {
			t.Fatalf("device %d shows %q", i, got)
		}
	}
	for i, d := range devs[4:] {
		if got := texts(t, d, conv); !slices.Equal(got, []string{"bob says hi"}) {
			t.Fatalf("removed device %d shows %q", i, got)
		}
	}
	// Carol can no longer send to the group either.
	if _, err := devs[4].eng.send(context.Background(), conv, &payload{Type: PayloadText, Text: "x"}, sendOpts{}); err == nil {
		// Carol's client has not seen the removal record (it was not sent to her); her message must be refused
		// by every remaining member.
		deliver(t, devs...)
		for i, d := range devs[:4] {
			if got := texts(t, d, conv); slices.Contains(got, "x") {
				t.Fatalf("device %d accepted a removed member's message", i)
			}
		}
	}
}
