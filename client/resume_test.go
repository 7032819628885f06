package client_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iagon/gridchat/client"
	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/node"
	"github.com/iagon/gridchat/wire"
)

// countEvents counts the message events of one client instance per (sender device, number) until its event
// channel closes.
func countEvents(c *client.Client, conv e2ee.ConversationID, counts map[string]int, mu *sync.Mutex, wg *sync.WaitGroup) {
	wg.Go(func() {
		for ev := range c.Events() {
			if m, ok := ev.(*client.MessageEvent); ok && m.Message.Conversation == conv {
				mu.Lock()
				counts[fmt.Sprintf("%s/%d", m.Message.SenderDevice, m.Message.Seq)]++
				mu.Unlock()
			}
		}
	})
}

// Issue 14, acceptance 5: a client that moves to another gateway in the middle of a 1,000-message stream ends
// with every message, and the application never sees one twice.
func TestReconnectToAnotherGatewayMidStreamLosesAndRepeatsNothing(t *testing.T) {
	const n = 1000
	g := newGrid(t, 3)
	alice := g.register("alice", 0)
	bobCfg := g.config(1)
	bob, err := client.Register(g.ctx, bobCfg, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if err := bob.WaitConnected(g.ctx); err != nil {
		t.Fatal(err)
	}
	conv := mustDirect(t, g.ctx, alice, "bob")
	send(t, g.ctx, alice, conv, "start")
	waitTexts(t, bob, conv, []string{"start"})

	var mu sync.Mutex
	counts := map[string]int{}
	var wg sync.WaitGroup
	countEvents(bob, conv, counts, &mu, &wg)

	want := []string{"start"}
	for i := range n {
		want = append(want, fmt.Sprintf("stream %03d", i))
	}
	var sent atomic.Int64
	sendDone := make(chan error, 1)
	go func() {
		for _, text := range want[1:] {
			if _, err := alice.SendText(g.ctx, conv, text); err != nil {
				sendDone <- err
				return
			}
			sent.Add(1)
		}
		sendDone <- nil
	}()
	// Move Bob to another gateway a third of the way through.
	for len(texts(t, bob, conv)) < n/3 {
		time.Sleep(5 * time.Millisecond) // polling the history with the stream's own deadline below
		if g.ctx.Err() != nil {
			t.Fatal("stream stalled")
		}
	}
	bob.Close()
	bobCfg.Gateways = []string{g.nodes[2].GatewayURL()}
	bob, err = client.Open(g.ctx, bobCfg)
	if err != nil {
		t.Fatal(err)
	}
	countEvents(bob, conv, counts, &mu, &wg)
	if err := <-sendDone; err != nil {
		t.Fatalf("alice's stream stopped after %d messages: %v", sent.Load(), err)
	}
	waitTexts(t, bob, conv, want)
	bob.Close()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for k, c := range counts {
		if c > 1 {
			t.Fatalf("message %s reached the application %d times", k, c)
		}
	}
}

// fakeClock is a clock tests move forward.
type fakeClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// Issue 14, acceptance 3 (client side): envelopes that expire in the mailbox while the device is offline are
// reported, when it reconnects, as one gap event with the right count, sender and reason.
func TestExpiredEnvelopesAreReportedAsGapOnReconnect(t *testing.T) {
	clock := &fakeClock{}
	nodes := gridtest.Swarm(t, 3, gridtest.Configure(func(_ int, cfg *node.Config) {
		cfg.Mailbox.Clock = clock.Now
		cfg.Mailbox.DisableLoops = true
		cfg.Mailbox.Limits.TTL = 30 * time.Second
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	g := &grid{t: t, nodes: nodes, ctx: ctx}
	alice := g.register("alice", 0)
	bobCfg := g.config(1)
	bob, err := client.Register(g.ctx, bobCfg, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if err := bob.WaitConnected(g.ctx); err != nil {
		t.Fatal(err)
	}
	conv := mustDirect(t, g.ctx, alice, "bob")
	send(t, g.ctx, alice, conv, "hello")
	waitTexts(t, bob, conv, []string{"hello"})
	bob.Close()
	// Bob is offline once his gateway has seen the connection end: an envelope pushed before that fails as
	// "gone" instead of reaching the mailbox.
	for deadline := time.Now().Add(10 * time.Second); nodes[1].Hub().Connected(wire.DeviceID(bob.Device())); {
		if time.Now().After(deadline) {
			t.Fatal("bob's gateway still lists him 10 s after he closed")
		}
		time.Sleep(10 * time.Millisecond) // polling the gateway's connection table with a deadline
	}
	drain(alice)
	for i := range 3 {
		send(t, g.ctx, alice, conv, fmt.Sprintf("lost %d", i))
		for _, st := range deliveryStatuses(t, alice) {
			if st.Device == bob.Device() && st.Status != wire.StatusStored {
				t.Fatalf("message %d to offline bob: %s (%s), want stored", i, st.Status, st.Reason)
			}
		}
	}
	// Two minutes pass on the mailboxes' clock (within every proof's allowed skew): the three expire.
	clock.advance(2 * time.Minute)
	expired := 0
	for _, nd := range nodes {
		r, err := nd.Mailbox().Expire(g.ctx)
		if err != nil {
			t.Fatal(err)
		}
		expired += r.Expired
	}
	if expired == 0 {
		t.Fatal("no envelope expired")
	}
	bobCfg.Gateways = []string{nodes[2].GatewayURL()}
	bob, err = client.Open(g.ctx, bobCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case ev := <-bob.Events():
			gap, ok := ev.(*client.GapEvent)
			if !ok {
				continue
			}
			if gap.Reason != client.GapExpired || gap.Count != 3 || gap.SenderDevice != alice.Device() {
				t.Fatalf("gap event %+v, want 3 expired from alice's device", gap)
			}
			if got := texts(t, bob, conv); len(got) != 1 {
				t.Fatalf("bob shows %q after the expiry", got)
			}
			return
		case <-deadline:
			t.Fatal("no gap event for the expired envelopes")
		}
	}
}
