package mailbox_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/node"
	"github.com/iagon/gridchat/relay/mailbox"
	"github.com/iagon/gridchat/relay/mailbox/receipt"
	"github.com/iagon/gridchat/wire"
)

const childEnv = "GRIDCHAT_MAILBOX_CHILD_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		runChild(dir, os.Getenv("GRIDCHAT_MAILBOX_CHILD_BOOTSTRAP"))
		return
	}
	gridtest.VerifyTestMain(m)
}

// runChild runs one real node as this process (re-executed test binary) until it is killed.
func runChild(dir, bootstrap string) {
	cfg := node.DefaultConfig()
	cfg.DataDir = dir
	cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.GatewayAddr = "127.0.0.1:0"
	cfg.Bootstrap = strings.Fields(bootstrap)
	cfg.Mailbox.DisableLoops = true
	n, err := node.New(context.Background(), cfg)
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	for _, a := range n.P2PAddrs() {
		fmt.Println("ADDR", a)
	}
	fmt.Println("READY")
	select {}
}

// noLoops makes the swarm's mailboxes run expiry and repair only when the test asks.
func noLoops(extra ...func(*node.Config)) gridtest.Option {
	return gridtest.Configure(func(i int, cfg *node.Config) {
		cfg.Mailbox.DisableLoops = true
		for _, f := range extra {
			f(cfg)
		}
	})
}

func newDevice(t testing.TB) *e2ee.DeviceKeys {
	t.Helper()
	dk, err := e2ee.NewDeviceKeys(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return dk
}

func did(dk *e2ee.DeviceKeys) wire.DeviceID { return wire.DeviceID(dk.ID()) }

func envelope(t testing.TB, from, to wire.DeviceID, i int) wire.Envelope {
	var id wire.MessageID
	if _, err := rand.Read(id[:]); err != nil {
		t.Fatal(err)
	}
	return wire.Envelope{MessageID: id, Sender: from, Recipient: to, Ciphertext: fmt.Appendf(nil, "ciphertext %06d", i)}
}

func index(t testing.TB, e *mailbox.Envelope) int {
	var i int
	if _, err := fmt.Sscanf(string(e.Ciphertext), "ciphertext %d", &i); err != nil {
		t.Fatalf("ciphertext %q", e.Ciphertext)
	}
	return i
}

// putAll stores n envelopes from one sender through nd and checks that every "stored" carries a quorum of
// verifying receipts from distinct replicas.
func putAll(t testing.TB, nd *node.Node, from, to wire.DeviceID, first, n int) []wire.Envelope {
	t.Helper()
	ctx := context.Background()
	var out []wire.Envelope
	for i := first; i < first+n; i++ {
		env := envelope(t, from, to, i)
		st, err := nd.Mailbox().PutEnvelope(ctx, env)
		if err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
		want := receipt.Expect{Device: to, MessageID: env.MessageID,
			EnvelopeHash: receipt.EnvelopeHash(env.MessageID, env.Sender, env.Recipient, env.Ciphertext)}
		if _, err := receipt.VerifyReceipts(st.Receipts, want, nd.Mailbox().Limits().WriteQuorum); err != nil {
			t.Fatalf("put %d: receipts: %v", i, err)
		}
		out = append(out, env)
	}
	return out
}

// drain fetches dev's mailbox through nd (no follow) and returns the items, acknowledging each batch.
func drain(t testing.TB, nd *node.Node, dk *e2ee.DeviceKeys, ack bool) []mailbox.Item {
	t.Helper()
	return drainAt(t, nd, dk, ack, time.Now())
}

func drainAt(t testing.TB, nd *node.Node, dk *e2ee.DeviceKeys, ack bool, now time.Time) []mailbox.Item {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := mailbox.NewFetchRequest(dk, false, now)
	if err != nil {
		t.Fatal(err)
	}
	ss, err := nd.Mailbox().Open(ctx, req)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer ss.Close()
	var items []mailbox.Item
	var batch []wire.MessageID
	for {
		it, err := ss.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("next: %v", err)
		}
		items = append(items, it)
		if it.Envelope != nil {
			batch = append(batch, it.Envelope.MessageID)
		} else {
			batch = append(batch, it.Tombstone.MessageID)
		}
		if ack && len(batch) == 32 {
			if err := ss.Ack(ctx, batch...); err != nil {
				t.Fatalf("ack: %v", err)
			}
			batch = batch[:0]
		}
	}
	if ack && len(batch) > 0 {
		if err := ss.Ack(ctx, batch...); err != nil {
			t.Fatalf("ack: %v", err)
		}
	}
	if err := ss.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	return items
}

// checkInOrderOnce checks that items hold envelopes first..first+n-1, each once, in order.
func checkInOrderOnce(t testing.TB, items []mailbox.Item, n int) {
	t.Helper()
	if len(items) != n {
		t.Fatalf("received %d items, want %d", len(items), n)
	}
	for i, it := range items {
		if it.Envelope == nil {
			t.Fatalf("item %d is a tombstone", i)
		}
		if got := index(t, it.Envelope); got != i {
			t.Fatalf("item %d is envelope %d: out of order or duplicated", i, got)
		}
	}
}

func copies(t testing.TB, nodes []*node.Node, dev wire.DeviceID) []int {
	out := make([]int, len(nodes))
	for i, nd := range nodes {
		if nd == nil {
			continue
		}
		n, err := nd.Mailbox().Store().Count(context.Background(), dev)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = n
	}
	return out
}

func TestOfflineDeviceReceivesHundredInOrderOnceAndReplicasForget(t *testing.T) {
	nodes := gridtest.Swarm(t, 5, noLoops())
	a, b := newDevice(t), newDevice(t)
	putAll(t, nodes[0], did(a), did(b), 0, 100)
	c := copies(t, nodes, did(b))
	holders := 0
	for _, n := range c {
		if n == 100 {
			holders++
		}
	}
	if holders != 3 {
		t.Fatalf("copies per node %v: want 3 replicas holding 100", c)
	}
	items := drain(t, nodes[3], b, true)
	checkInOrderOnce(t, items, 100)
	if c := copies(t, nodes, did(b)); slices.Max(c) != 0 {
		t.Fatalf("after acknowledgement, replicas still hold %v", c)
	}
	// Resume: a reconnect delivers nothing that was acknowledged.
	if items := drain(t, nodes[1], b, true); len(items) != 0 {
		t.Fatalf("reconnect redelivered %d items", len(items))
	}
}

func TestNodeRestartKeepsStoredEnvelopes(t *testing.T) {
	var mu sync.Mutex
	cfgs := map[int]node.Config{}
	nodes := gridtest.Swarm(t, 3, noLoops(), gridtest.Configure(func(i int, cfg *node.Config) {
		mu.Lock()
		cfgs[i] = *cfg
		mu.Unlock()
	}))
	a, b := newDevice(t), newDevice(t)
	putAll(t, nodes[0], did(a), did(b), 0, 20)
	if c := copies(t, nodes, did(b)); c[2] != 20 {
		t.Fatalf("copies %v", c)
	}
	if err := nodes[2].Close(); err != nil {
		t.Fatal(err)
	}
	cfg := cfgs[2]
	cfg.Bootstrap = nil
	for _, ad := range nodes[0].P2PAddrs() {
		cfg.Bootstrap = append(cfg.Bootstrap, ad.String())
	}
	re, err := node.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = re.Close() })
	if n, _ := re.Mailbox().Store().Count(context.Background(), did(b)); n != 20 {
		t.Fatalf("after restart the node holds %d envelopes, want 20", n)
	}
}

func TestRefusesOtherDevicesReplaysAndOversizedPuts(t *testing.T) {
	nodes := gridtest.Swarm(t, 3, noLoops())
	ctx := context.Background()
	a, b, c := newDevice(t), newDevice(t), newDevice(t)
	envs := putAll(t, nodes[0], did(a), did(b), 0, 3)
	mb := nodes[1].Mailbox()

	// C signs a fetch whose body names B's mailbox.
	forged, err := mailbox.NewFetchRequest(c, false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	bReq, _ := mailbox.NewFetchRequest(b, false, time.Now())
	forged.Body = bReq.Body
	if _, err := mb.Open(ctx, forged); !errors.Is(err, mailbox.ErrUnauthorized) {
		t.Fatalf("fetch of B's mailbox signed by C: %v", err)
	}
	// C presents B's public key with its own signature.
	forged2, _ := mailbox.NewFetchRequest(c, false, time.Now())
	forged2.DevicePublic = bReq.DevicePublic
	forged2.Body = bReq.Body
	if _, err := mb.Open(ctx, forged2); !errors.Is(err, mailbox.ErrUnauthorized) {
		t.Fatalf("fetch with B's key and C's signature: %v", err)
	}
	// Deletes by another device.
	del, _ := mailbox.NewDeleteRequest(c, []wire.MessageID{envs[0].MessageID}, time.Now())
	bDel, _ := mailbox.NewDeleteRequest(b, []wire.MessageID{envs[0].MessageID}, time.Now())
	del.Body = bDel.Body
	if _, err := mb.Delete(ctx, del); !errors.Is(err, mailbox.ErrUnauthorized) {
		t.Fatalf("delete signed by C: %v", err)
	}
	if c := copies(t, nodes, did(b)); slices.Max(c) != 3 {
		t.Fatalf("a refused delete removed something: %v", c)
	}
	// A stale request.
	old, _ := mailbox.NewFetchRequest(b, false, time.Now().Add(-time.Hour))
	if _, err := mb.Open(ctx, old); !errors.Is(err, mailbox.ErrStale) {
		t.Fatalf("stale fetch: %v", err)
	}
	// A replayed request: the first use works, the second is refused by every replica.
	ss, err := mb.Open(ctx, bReq)
	if err != nil {
		t.Fatal(err)
	}
	ss.Close()
	if _, err := mb.Open(ctx, bReq); !errors.Is(err, mailbox.ErrReplay) {
		t.Fatalf("replayed fetch: %v", err)
	}
	if _, err := mb.Delete(ctx, bDel); err != nil {
		t.Fatalf("delete by B: %v", err)
	}
	if _, err := mb.Delete(ctx, bDel); !errors.Is(err, mailbox.ErrReplay) {
		t.Fatalf("replayed delete: %v", err)
	}
	// A put over the size limit.
	big := envelope(t, did(a), did(b), 0)
	big.Ciphertext = make([]byte, mb.Limits().MaxEnvelopeBytes+1)
	if _, err := nodes[0].Mailbox().PutEnvelope(ctx, big); !errors.Is(err, mailbox.ErrTooLarge) {
		t.Fatalf("oversized put: %v", err)
	}
}

func TestQuotasRefuseTheExcessWithStatus(t *testing.T) {
	nodes := gridtest.Swarm(t, 3, noLoops(func(cfg *node.Config) { cfg.Mailbox.Limits.MaxPerSender = 5 }))
	a, b := newDevice(t), newDevice(t)
	putAll(t, nodes[0], did(a), did(b), 0, 5)
	_, err := nodes[0].Mailbox().PutEnvelope(context.Background(), envelope(t, did(a), did(b), 5))
	if !errors.Is(err, mailbox.ErrSenderQuota) || !errors.Is(err, mailbox.ErrNoQuorum) {
		t.Fatalf("6th envelope from one sender: %v", err)
	}
	// Another sender is not affected.
	putAll(t, nodes[0], did(newDevice(t)), did(b), 10, 1)
}

// counter sums a counter (with the given label value, or all) over the nodes' registries.
func counter(t testing.TB, nodes []*node.Node, name, label string) float64 {
	t.Helper()
	var sum float64
	for _, nd := range nodes {
		mfs, err := nd.Metrics().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				if label == "" || (len(m.GetLabel()) > 0 && m.GetLabel()[0].GetValue() == label) {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

// fakeClock is a shared injectable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestExpiredEnvelopesAreReportedAsTombstonesOnFetch(t *testing.T) {
	clk := &fakeClock{now: time.Now()}
	nodes := gridtest.Swarm(t, 3, noLoops(func(cfg *node.Config) {
		cfg.Mailbox.Clock = clk.Now
		cfg.Mailbox.Limits.TTL = time.Hour
		cfg.Mailbox.Limits.MaxCount = 10
	}))
	a, x, b := newDevice(t), newDevice(t), newDevice(t)
	ctx := context.Background()
	putAll(t, nodes[0], did(a), did(b), 0, 4) // will expire by TTL
	clk.Advance(30 * time.Minute)
	putAll(t, nodes[0], did(x), did(b), 4, 9) // 13 in all: the 3 oldest (from A) are pushed out by count
	clk.Advance(45 * time.Minute)             // A's remaining envelope is now older than the TTL
	for _, nd := range nodes {
		if _, err := nd.Mailbox().Expire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	items := drainAt(t, nodes[2], b, true, clk.Now())
	var ttl, count, envs int
	for _, it := range items {
		switch {
		case it.Envelope != nil:
			envs++
			if it.Envelope.Sender != did(x) {
				t.Fatalf("envelope from the wrong sender survived")
			}
		case it.Tombstone.Sender != did(a):
			t.Fatalf("tombstone names sender %x", it.Tombstone.Sender[:4])
		case it.Tombstone.Reason == mailbox.ReasonTTL:
			ttl++
		case it.Tombstone.Reason == mailbox.ReasonCount:
			count++
		}
		if it.Envelope != nil && envs == 1 && ttl+count != 4 {
			t.Fatalf("tombstones must come before envelopes")
		}
	}
	if ttl != 1 || count != 3 || envs != 9 {
		t.Fatalf("got %d ttl tombstones, %d count tombstones, %d envelopes; want 1, 3, 9", ttl, count, envs)
	}
	// Every replica counted its expiries, and the stores and fetches add up.
	if got := counter(t, nodes, "gridchat_mailbox_expired_total", "count"); got != 9 {
		t.Fatalf("count expiries counted %v, want 3 on each of 3 replicas", got)
	}
	if got := counter(t, nodes, "gridchat_mailbox_expired_total", "ttl"); got != 3 {
		t.Fatalf("ttl expiries counted %v, want 1 on each of 3 replicas", got)
	}
	if got := counter(t, nodes, "gridchat_mailbox_stored_total", ""); got != 39 {
		t.Fatalf("stored counted %v, want 13 on each of 3 replicas", got)
	}
	// Acknowledged tombstones are gone.
	if items := drainAt(t, nodes[1], b, false, clk.Now()); len(items) != 0 {
		t.Fatalf("%d items after acknowledgement", len(items))
	}
}

func TestDeviceComingOnlineWhileSenderSendsLosesAndDuplicatesNothing(t *testing.T) {
	nodes := gridtest.Swarm(t, 4, noLoops())
	a, b := newDevice(t), newDevice(t)
	const total = 150
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	started := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range total {
			if i == 40 {
				close(started)
			}
			if _, err := nodes[0].Mailbox().PutEnvelope(ctx, envelope(t, did(a), did(b), i)); err != nil {
				t.Errorf("put %d: %v", i, err)
				return
			}
		}
	})
	<-started
	req, err := mailbox.NewFetchRequest(b, true, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ss, err := nodes[3].Mailbox().Open(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	seen := make(map[int]int)
	for len(seen) < total {
		it, err := ss.Next(ctx)
		if err != nil {
			t.Fatalf("after %d envelopes: %v", len(seen), err)
		}
		i := index(t, it.Envelope)
		seen[i]++
		if seen[i] > 1 {
			t.Fatalf("envelope %d delivered twice", i)
		}
		if err := ss.Ack(ctx, it.Envelope.MessageID); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if err := ss.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Nothing more arrives, and nothing is left behind.
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	if it, err := ss.Next(short); err == nil {
		t.Fatalf("extra item %d", index(t, it.Envelope))
	}
	if c := copies(t, nodes, did(b)); slices.Max(c) != 0 {
		t.Fatalf("replicas still hold %v", c)
	}
}

// replicaIndexes returns the indexes in nodes of dev's replicas.
func replicaIndexes(t testing.TB, nodes []*node.Node, dev wire.DeviceID) []int {
	reps, err := nodes[0].Mailbox().Replicas(context.Background(), dev)
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for i, nd := range nodes {
		if nd != nil && slices.Contains(reps, nd.ID()) {
			out = append(out, i)
		}
	}
	return out
}

func TestReplicaThatWasDownCatchesUpAndAloneDeliversEverything(t *testing.T) {
	var mu sync.Mutex
	cfgs := map[int]node.Config{}
	nodes := slices.Clone(gridtest.Swarm(t, 4, noLoops(), gridtest.Configure(func(i int, cfg *node.Config) {
		mu.Lock()
		cfgs[i] = *cfg
		mu.Unlock()
	})))
	ctx := context.Background()
	a, b := newDevice(t), newDevice(t)
	// Pick a device whose replicas do not include node 0 (the sender's gateway stays up throughout).
	var reps []int
	for {
		reps = replicaIndexes(t, nodes, did(b))
		if !slices.Contains(reps, 0) {
			break
		}
		b = newDevice(t)
	}
	down := reps[0]
	if err := nodes[down].Close(); err != nil {
		t.Fatal(err)
	}
	downNode := nodes[down]
	nodes[down] = nil
	putAll(t, nodes[0], did(a), did(b), 0, 100)
	_ = downNode

	cfg := cfgs[down]
	cfg.Bootstrap = nil
	for _, ad := range nodes[0].P2PAddrs() {
		cfg.Bootstrap = append(cfg.Bootstrap, ad.String())
	}
	back, err := node.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = back.Close() })
	nodes[down] = back
	if err := gridtest.WaitFormed(ctx, []*node.Node{back}, 2, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if n, _ := back.Mailbox().Store().Count(ctx, did(b)); n != 0 {
		t.Fatalf("the replica that was down holds %d before reconciliation", n)
	}
	// The other replicas reconcile (as their repair loop would on the reconnect).
	for _, i := range reps[1:] {
		if _, err := nodes[i].Mailbox().Reconcile(ctx); err != nil {
			t.Logf("reconcile on node %d: %v", i, err)
		}
	}
	if n, _ := back.Mailbox().Store().Count(ctx, did(b)); n != 100 {
		t.Fatalf("after reconciliation the returning replica holds %d, want 100", n)
	}
	// Kill the other two replicas: the one that caught up alone delivers all 100, once each.
	for _, i := range reps[1:] {
		if err := nodes[i].Close(); err != nil {
			t.Fatal(err)
		}
		nodes[i] = nil
	}
	checkInOrderOnce(t, drain(t, nodes[0], b, false), 100)
}

func TestAcknowledgedEnvelopeIsNotRedeliveredFromReplicaThatMissedTheDelete(t *testing.T) {
	nodes := gridtest.Swarm(t, 3, noLoops())
	ctx := context.Background()
	a, b := newDevice(t), newDevice(t)
	envs := putAll(t, nodes[0], did(a), did(b), 0, 10)
	// Node 2 misses the delete: delete on nodes 0 and 1 only, directly in their stores.
	ids := []wire.MessageID{envs[0].MessageID, envs[1].MessageID}
	for _, nd := range nodes[:2] {
		if _, err := nd.Mailbox().Store().Delete(ctx, did(b), ids, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := nodes[2].Mailbox().Store().Count(ctx, did(b)); n != 10 {
		t.Fatalf("node 2 holds %d", n)
	}
	if _, err := nodes[2].Mailbox().Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if c := copies(t, nodes, did(b)); c[0] != 8 || c[1] != 8 || c[2] != 8 {
		t.Fatalf("after reconciliation copies are %v, want 8 each", c)
	}
	items := drain(t, nodes[1], b, false)
	if len(items) != 8 || index(t, items[0].Envelope) != 2 {
		t.Fatalf("fetched %d items, first %d", len(items), index(t, items[0].Envelope))
	}
}

func TestRevocationDropsTheMailbox(t *testing.T) {
	nodes := gridtest.Swarm(t, 3, noLoops())
	ctx := context.Background()
	a, b := newDevice(t), newDevice(t)
	putAll(t, nodes[0], did(a), did(b), 0, 5)
	for _, nd := range nodes {
		if err := nd.Mailbox().Revoke(ctx, did(b)); err != nil {
			t.Fatal(err)
		}
	}
	if c := copies(t, nodes, did(b)); slices.Max(c) != 0 {
		t.Fatalf("copies after revocation %v", c)
	}
	if _, err := nodes[0].Mailbox().PutEnvelope(ctx, envelope(t, did(a), did(b), 9)); !errors.Is(err, mailbox.ErrRevoked) {
		t.Fatalf("put to a revoked device: %v", err)
	}
	req, _ := mailbox.NewFetchRequest(b, false, time.Now())
	if _, err := nodes[1].Mailbox().Open(ctx, req); !errors.Is(err, mailbox.ErrRevoked) {
		t.Fatalf("fetch by a revoked device: %v", err)
	}
}

// tailBuffer keeps the last 64 KiB written to it; safe for one writer and concurrent readers.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - 64<<10; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// startChild starts a real node in a child process (this test binary re-executed) joined to the grid through
// boot, and returns its peer ID, the command to kill and the end of what it wrote to stderr.
func startChild(t *testing.T, boot *node.Node) (peer.ID, *exec.Cmd, *tailBuffer) {
	t.Helper()
	var bs []string
	for _, a := range boot.P2PAddrs() {
		bs = append(bs, a.String())
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+t.TempDir(), "GRIDCHAT_MAILBOX_CHILD_BOOTSTRAP="+strings.Join(bs, " "))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := new(tailBuffer)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(out)
	var id peer.ID
	for sc.Scan() {
		line := sc.Text()
		if a, ok := strings.CutPrefix(line, "ADDR "); ok {
			ai, err := peer.AddrInfoFromString(a)
			if err != nil {
				t.Fatal(err)
			}
			id = ai.ID
		}
		if line == "READY" {
			break
		}
		if strings.HasPrefix(line, "ERROR") {
			t.Fatalf("%s\n%s", line, stderr)
		}
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	return id, cmd, stderr
}

func TestReplicaKilledAfterStoredLosesNothingAndIsRepaired(t *testing.T) {
	nodes := gridtest.Swarm(t, 4, noLoops())
	ctx := context.Background()
	childID, cmd, childErr := startChild(t, nodes[0])
	// Pick, by XOR distance alone, a device whose 3 closest of the 5 nodes include the child, and as the node
	// that stores and watches (the "entry") one of the two swarm nodes outside that set. Which nodes can share
	// a replica set is fixed by their IDs (two nodes alone in one half of the key space are always chosen
	// together there), so the entry is chosen per device, not fixed in advance.
	all := []peer.ID{childID}
	for _, nd := range nodes {
		all = append(all, nd.ID())
	}
	a := newDevice(t)
	var b *e2ee.DeviceKeys
	var want []peer.ID
	for !slices.Contains(want, childID) {
		b = newDevice(t)
		want = kb.SortClosestPeers(slices.Clone(all), kb.ConvertKey(mailbox.Key(did(b))))[:3]
	}
	entry, other := -1, -1
	for i, nd := range nodes {
		switch {
		case slices.Contains(want, nd.ID()):
		case entry < 0:
			entry = i
		default:
			other = i
		}
	}
	// Then wait until the entry's own view gives exactly that set: replica sets are drawn from the peers it is
	// connected to and has in its routing table, and on a loaded machine the child may join late or drop out
	// of the table for a moment (kad-dht evicts a peer whose query failed).
	deadline := time.Now().Add(30 * time.Second)
	for {
		reps, err := nodes[entry].Mailbox().Replicas(ctx, did(b))
		if err != nil {
			t.Fatal(err)
		}
		if slices.Equal(reps, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d never saw the replica set %v, last %v; routing table %v, connected to the child: %v; child's stderr:\n%s",
				entry+1, want, reps, nodes[entry].DHT().RoutingTable().ListPeers(), nodes[entry].Host().Network().Connectedness(childID), childErr)
		}
		for _, p := range all {
			if p != nodes[entry].ID() {
				_ = nodes[entry].Host().Connect(ctx, nodes[entry].Host().Peerstore().PeerInfo(p))
			}
		}
		time.Sleep(100 * time.Millisecond) // polling with a deadline for the entry's view of the grid to settle
	}
	putAll(t, nodes[entry], did(a), did(b), 0, 50)
	// kill -9 the child replica after "stored".
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	checkInOrderOnce(t, drain(t, nodes[other], b, false), 50)
	// The survivors notice the death when their transport times out (QUIC's idle timeout is 30 s); close
	// those dead connections now rather than wait.
	for _, nd := range nodes {
		_ = nd.Host().Network().ClosePeer(childID)
	}
	// Repair: the surviving replicas re-replicate to the node that is now among the 3 closest.
	for _, nd := range nodes {
		if _, err := nd.Mailbox().Reconcile(ctx); err != nil {
			t.Logf("reconcile: %v", err)
		}
	}
	reps, err := nodes[entry].Mailbox().Replicas(ctx, did(b))
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(reps, childID) || len(reps) != 3 {
		t.Fatalf("replica set after the kill: %v", reps)
	}
	full := 0
	for _, nd := range nodes {
		if n, _ := nd.Mailbox().Store().Count(ctx, did(b)); n == 50 && slices.Contains(reps, nd.ID()) {
			full++
		}
	}
	if full != 3 {
		t.Fatalf("after repair %d replicas hold all 50, want 3 (copies %v)", full, copies(t, nodes, did(b)))
	}
}

func TestRepairLoopCatchesUpReturningReplicaByItself(t *testing.T) {
	var mu sync.Mutex
	cfgs := map[int]node.Config{}
	nodes := slices.Clone(gridtest.Swarm(t, 4, gridtest.Configure(func(i int, cfg *node.Config) {
		cfg.Mailbox.Limits.RepairInterval = 300 * time.Millisecond
		mu.Lock()
		cfgs[i] = *cfg
		mu.Unlock()
	})))
	ctx := context.Background()
	a, b := newDevice(t), newDevice(t)
	var reps []int
	for {
		reps = replicaIndexes(t, nodes, did(b))
		if !slices.Contains(reps, 0) {
			break
		}
		b = newDevice(t)
	}
	down := reps[0]
	if err := nodes[down].Close(); err != nil {
		t.Fatal(err)
	}
	nodes[down] = nil
	putAll(t, nodes[0], did(a), did(b), 0, 30)
	cfg := cfgs[down]
	cfg.Bootstrap = nil
	for _, ad := range nodes[0].P2PAddrs() {
		cfg.Bootstrap = append(cfg.Bootstrap, ad.String())
	}
	back, err := node.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = back.Close() })
	// No Reconcile call: the timer and the reconnection events must bring it back to 30.
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, err := back.Mailbox().Store().Count(ctx, did(b))
		if err != nil {
			t.Fatal(err)
		}
		if n == 30 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the returning replica holds %d of 30 after 20 s", n)
		}
		time.Sleep(50 * time.Millisecond) // polling the repair loop's effect, with a deadline
	}
}
