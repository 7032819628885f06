package mailbox_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/node"
	"github.com/iagon/gridchat/relay/mailbox"
	"github.com/iagon/gridchat/relay/mailbox/receipt"
	"github.com/iagon/gridchat/wire"
)

var (
	churnMessages = flag.Int("churn.messages", 10_000, "envelopes BenchmarkDeliveryWhileReplicaRestarts stores and delivers")
	churnUp       = flag.Duration("churn.up", 2*time.Second, "how long the churned replica stays up between restarts")
	churnDown     = flag.Duration("churn.down", 500*time.Millisecond, "how long the churned replica stays down")
	// A replica that comes back on new ports leaves stale addresses in the other nodes' peerstores: puts then
	// wait for a dial to time out (5 s on loopback) until the new addresses spread.
	churnNewPorts = flag.Bool("churn.newports", false, "restart the replica on new ports instead of its own")
)

// churner closes one node and starts it again on the same data directory, over and over, until stopped.
type churner struct {
	cfg      node.Config
	boot     *node.Node
	up, down time.Duration

	mu       sync.Mutex
	cur      *node.Node // the running instance, nil while down
	restarts int
	err      error

	stop chan struct{}
	done chan struct{}
}

func (c *churner) run() {
	defer close(c.done)
	for {
		select {
		case <-c.stop:
			return
		case <-time.After(c.up): // the churn schedule, not synchronisation
		}
		c.mu.Lock()
		nd := c.cur
		c.cur = nil
		c.mu.Unlock()
		if err := nd.Close(); err != nil {
			c.fail(fmt.Errorf("close replica: %w", err))
			return
		}
		time.Sleep(c.down) // the replica stays down for a while: the churn schedule
		cfg := c.cfg
		cfg.Bootstrap = nil
		for _, a := range c.boot.P2PAddrs() {
			cfg.Bootstrap = append(cfg.Bootstrap, a.String())
		}
		nd, err := node.New(context.Background(), cfg)
		if err != nil {
			c.fail(fmt.Errorf("restart replica on its data directory: %w", err))
			return
		}
		c.mu.Lock()
		c.cur = nd
		c.restarts++
		c.mu.Unlock()
	}
}

func (c *churner) fail(err error) {
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
}

// halt stops the churn with the replica running and returns it.
func (c *churner) halt() (*node.Node, int, error) {
	close(c.stop)
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur, c.restarts, c.err
}

// percentile returns the p-th percentile of ds (sorted in place) in milliseconds.
func percentile(ds []time.Duration, p float64) float64 {
	slices.Sort(ds)
	return float64(ds[int(float64(len(ds)-1)*p)]) / float64(time.Millisecond)
}

// BenchmarkDeliveryWhileReplicaRestarts is issue 14's acceptance 7. A 4-node grid (repair loop every second)
// stores -churn.messages envelopes for one offline device, one after the other, while one of the device's
// three replicas is closed and started again on its data directory and ports every -churn.up (down for
// -churn.down; -churn.newports gives it new ports, as a host with a new address would get). The
// device then fetches and acknowledges everything through another node, the churn still going on; when the
// churn stops and the replicas have reconciled, a last fetch must find nothing (an acknowledged envelope
// delivered again is a duplicate).
//
// Reported: delivered-% (distinct envelopes fetched of those sent), duplicates (acknowledged envelopes
// delivered again), put-failures (puts without a quorum, retried until stored), restarts, and the latency of
// the "stored" status without receipt verification (the put returning with its receipts: the baseline) and
// with it (the put plus the SDK's check of a quorum of distinct signed receipts), both from the same puts.
func BenchmarkDeliveryWhileReplicaRestarts(b *testing.B) {
	n := *churnMessages
	var mu sync.Mutex
	cfgs := map[int]node.Config{}
	nodes := gridtest.Swarm(b, 4, gridtest.Configure(func(i int, cfg *node.Config) {
		cfg.Mailbox.Limits.RepairInterval = time.Second
		cfg.Mailbox.Limits.MaxCount = 2 * n
		cfg.Mailbox.Limits.MaxPerSender = 2 * n
		cfg.Mailbox.Limits.MaxTombstones = 2 * n
		mu.Lock()
		cfgs[i] = *cfg
		mu.Unlock()
	}))
	ctx := context.Background()
	sender := newDevice(b)
	var dev *e2ee.DeviceKeys
	var reps []int
	for {
		dev = newDevice(b)
		if reps = replicaIndexes(b, nodes, did(dev)); !slices.Contains(reps, 0) {
			break
		}
	}
	quorum := nodes[0].Mailbox().Limits().WriteQuorum
	// The replica comes back where it was, as a restarted server does: same data directory, same ports.
	churned := cfgs[reps[0]]
	if !*churnNewPorts {
		churned.ListenAddrs = nil
		for _, a := range nodes[reps[0]].Host().Network().ListenAddresses() {
			churned.ListenAddrs = append(churned.ListenAddrs, a.String())
		}
	}

	for b.Loop() {
		ch := &churner{cfg: churned, boot: nodes[0], up: *churnUp, down: *churnDown, cur: nodes[reps[0]],
			stop: make(chan struct{}), done: make(chan struct{})}
		go ch.run()
		halted := false
		halt := func() (*node.Node, int, error) {
			halted = true
			return ch.halt()
		}
		defer func() {
			if !halted {
				if nd, _, _ := halt(); nd != nil {
					_ = nd.Close()
				}
			}
		}()

		// Store, through node 0, every envelope; a put without a quorum is retried with the same message ID, as
		// the sender's client would.
		plain := make([]time.Duration, 0, n)
		verified := make([]time.Duration, 0, n)
		putFailures := 0
		ids := make(map[wire.MessageID]int, n)
		order := make([]wire.MessageID, n)
		for i := range n {
			env := envelope(b, did(sender), did(dev), i)
			ids[env.MessageID], order[i] = i, env.MessageID
			want := receipt.Expect{Device: did(dev), MessageID: env.MessageID,
				EnvelopeHash: receipt.EnvelopeHash(env.MessageID, env.Sender, env.Recipient, env.Ciphertext)}
			for try := 0; ; try++ {
				start := time.Now()
				st, err := nodes[0].Mailbox().PutEnvelope(ctx, env)
				stored := time.Since(start)
				if err == nil {
					_, err = receipt.VerifyReceipts(st.Receipts, want, quorum)
					if err != nil {
						b.Fatalf("put %d: stored with receipts that do not verify: %v", i, err)
					}
					plain = append(plain, stored)
					verified = append(verified, time.Since(start))
					break
				}
				putFailures++
				if try == 20 {
					b.Fatalf("put %d: no quorum after %d tries: %v", i, try+1, err)
				}
			}
		}

		// Fetch and acknowledge through node 0 (not a replica of the device) while the churn goes on. A fetch cut
		// short opens a new one, as a reconnecting gateway would.
		delivered := make(map[int]int, n)
		acked := make(map[int]bool, n)
		duplicates, sessions := 0, 0
		fetch := func() error {
			sessions++
			fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			req, err := mailbox.NewFetchRequest(dev, false, time.Now())
			if err != nil {
				return err
			}
			ss, err := nodes[0].Mailbox().Open(fctx, req)
			if err != nil {
				return err
			}
			defer ss.Close()
			var batch []int
			ack := func() error {
				if len(batch) == 0 {
					return nil
				}
				mids := make([]wire.MessageID, 0, len(batch))
				for _, i := range batch {
					mids = append(mids, order[i])
				}
				if err := ss.Ack(fctx, mids...); err != nil {
					return err
				}
				for _, i := range batch {
					acked[i] = true
				}
				batch = batch[:0]
				return nil
			}
			for {
				it, err := ss.Next(fctx)
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return err
				}
				if it.Envelope == nil {
					b.Fatalf("tombstone for %x: nothing should expire", it.Tombstone.MessageID[:4])
				}
				i, ok := ids[it.Envelope.MessageID]
				if !ok {
					b.Fatalf("fetched an envelope that was never sent")
				}
				delivered[i]++
				if acked[i] {
					duplicates++
				}
				if batch = append(batch, i); len(batch) == 256 {
					if err := ack(); err != nil {
						return err
					}
				}
			}
			if err := ack(); err != nil {
				return err
			}
			return ss.Flush(fctx)
		}
		deadline := time.Now().Add(2 * time.Minute)
		for len(acked) < n && time.Now().Before(deadline) {
			if err := fetch(); err != nil {
				b.Logf("fetch session %d: %v", sessions, err)
			}
		}

		// Stop the churn, let the replicas reconcile (as their repair loop does every second), and fetch once
		// more: whatever comes back was acknowledged already.
		back, restarts, err := halt()
		if err != nil {
			b.Fatal(err)
		}
		live := []*node.Node{nodes[0], back}
		for _, i := range []int{1, 2, 3} {
			if i != reps[0] {
				live = append(live, nodes[i])
			}
		}
		if err := gridtest.WaitFormed(ctx, live, 3, 30*time.Second); err != nil {
			b.Fatal(err)
		}
		for _, nd := range live {
			if _, err := nd.Mailbox().Reconcile(ctx); err != nil {
				b.Logf("reconcile: %v", err)
			}
		}
		before := len(acked)
		if err := fetch(); err != nil {
			b.Fatalf("final fetch: %v", err)
		}
		if len(acked) != before {
			b.Logf("the final fetch found %d envelopes never acknowledged before", len(acked)-before)
		}
		left := 0
		for _, nd := range live {
			c, err := nd.Mailbox().Store().Count(ctx, did(dev))
			if err != nil {
				b.Fatal(err)
			}
			left += c
		}
		if err := back.Close(); err != nil {
			b.Fatal(err)
		}

		b.ReportMetric(100*float64(len(delivered))/float64(n), "delivered-%")
		b.ReportMetric(float64(duplicates), "duplicates")
		b.ReportMetric(float64(putFailures), "put-failures")
		b.ReportMetric(float64(restarts), "restarts")
		b.ReportMetric(float64(sessions), "fetch-sessions")
		b.ReportMetric(float64(left), "copies-left")
		b.ReportMetric(percentile(plain, 0.5), "stored-p50-ms")
		b.ReportMetric(percentile(verified, 0.5), "stored-verified-p50-ms")
		b.ReportMetric(percentile(plain, 0.99), "stored-p99-ms")
		b.ReportMetric(percentile(verified, 0.99), "stored-verified-p99-ms")
		b.ReportMetric(percentile(plain, 1), "stored-max-ms")
		var sp, sv time.Duration
		for i := range plain {
			sp += plain[i]
			sv += verified[i]
		}
		b.ReportMetric(float64(sv)/float64(sp), "verified/plain")
		sign, check := receiptCosts(b, did(dev))
		b.ReportMetric(sign, "receipt-sign-us")
		b.ReportMetric(check, "receipt-verify-us")
	}
}

// receiptCosts measures, in microseconds, what one receipt costs its replica to sign and a verifier to check:
// each stored status takes a signature on every replica (in parallel) and a check per receipt at the gateway
// and again in the SDK.
func receiptCosts(b *testing.B, dev wire.DeviceID) (sign, verify float64) {
	const rounds = 500
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	var id wire.MessageID
	want := receipt.Expect{Device: dev, MessageID: id, EnvelopeHash: receipt.EnvelopeHash(id, dev, dev, []byte("ciphertext"))}
	r := &receipt.Receipt{Replica: receipt.PeerID(pub), Device: dev, MessageID: id, EnvelopeHash: want.EnvelopeHash,
		Time: time.Now()}
	start := time.Now()
	for range rounds {
		if err := receipt.Sign(r, priv); err != nil {
			b.Fatal(err)
		}
	}
	sign = float64(time.Since(start).Microseconds()) / rounds
	enc := [][]byte{r.Encode()}
	start = time.Now()
	for range rounds {
		if _, err := receipt.VerifyReceipts(enc, want, 1); err != nil {
			b.Fatal(err)
		}
	}
	return sign, float64(time.Since(start).Microseconds()) / rounds
}
