package client_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/iagon/gridchat/client"
	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/node"
	"github.com/iagon/gridchat/wire"
)

// seenEnvelope is one envelope a node was about to push to a device connected to it.
type seenEnvelope struct {
	node     int
	from, to wire.DeviceID
	id       wire.MessageID
	dropped  bool
}

// lossyGrid watches every envelope the nodes push to their devices and makes one node drop, silently, the
// next envelope between two chosen devices once armed.
type lossyGrid struct {
	bad int // the misbehaving node

	mu       sync.Mutex
	log      []seenEnvelope
	armed    bool
	from, to wire.DeviceID
}

// hook is node i's DeliverySettings.DropEnvelope.
func (l *lossyGrid) hook(i int) func(wire.Envelope) bool {
	return func(env wire.Envelope) bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		drop := i == l.bad && l.armed && env.Sender == l.from && env.Recipient == l.to
		if drop {
			l.armed = false
		}
		l.log = append(l.log, seenEnvelope{node: i, from: env.Sender, to: env.Recipient, id: env.MessageID, dropped: drop})
		return drop
	}
}

// dropNext makes the bad node drop the next envelope from one device to another.
func (l *lossyGrid) dropNext(from, to e2ee.DeviceID) {
	l.mu.Lock()
	l.armed, l.from, l.to = true, wire.DeviceID(from), wire.DeviceID(to)
	l.mu.Unlock()
}

// since returns the envelopes seen after the first n.
func (l *lossyGrid) since(n int) []seenEnvelope {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.log[n:])
}

func (l *lossyGrid) seen() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.log)
}

// eventLog keeps every event of one client until its channel closes.
type eventLog struct {
	mu     sync.Mutex
	events []client.Event
	wg     sync.WaitGroup
}

func recordEvents(c *client.Client) *eventLog {
	el := &eventLog{}
	el.wg.Go(func() {
		for ev := range c.Events() {
			el.mu.Lock()
			el.events = append(el.events, ev)
			el.mu.Unlock()
		}
	})
	return el
}

func (el *eventLog) snapshot() []client.Event {
	el.mu.Lock()
	defer el.mu.Unlock()
	return slices.Clone(el.events)
}

// Issue 14, acceptance 4: a node that silently drops one envelope in the middle of a conversation (it tells the
// sender "delivered" and never pushes it) causes a gap event at the receiver naming the sender and the missing
// number, and a resend request to the sender's device; the sender resends, and the receiver ends with every
// message once, in order.
func TestEnvelopeSilentlyDroppedByNodeIsReportedAsGapAndResent(t *testing.T) {
	lossy := &lossyGrid{bad: 1}
	nodes := gridtest.Swarm(t, 3, gridtest.Configure(func(i int, cfg *node.Config) {
		cfg.Delivery.DropEnvelope = lossy.hook(i)
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	g := &grid{t: t, nodes: nodes, ctx: ctx}
	alice := g.register("alice", 0)
	bob := g.register("bob", lossy.bad)
	conv := mustDirect(t, ctx, alice, "bob")
	bobEvents := recordEvents(bob)

	var want []string
	for i := 1; i <= 6; i++ {
		want = append(want, fmt.Sprintf("message %d", i))
	}
	send(t, ctx, alice, conv, want[0])
	send(t, ctx, alice, conv, want[1])
	waitTexts(t, bob, conv, want[:2])

	// Bob's gateway drops message 3 and tells Alice's gateway it was delivered.
	mark := lossy.seen()
	lossy.dropNext(alice.Device(), bob.Device())
	drain(alice)
	send(t, ctx, alice, conv, want[2])
	for _, st := range deliveryStatuses(t, alice) {
		if st.Device == bob.Device() && st.Status != wire.StatusDelivered {
			t.Fatalf("the dropped message reached alice as %s, want the node's silent %q", st.Status, wire.StatusDelivered)
		}
	}
	dropped := lossy.since(mark)
	if len(dropped) != 1 || !dropped[0].dropped || dropped[0].node != lossy.bad {
		t.Fatalf("envelopes seen while message 3 was sent: %+v, want one dropped by node %d", dropped, lossy.bad)
	}
	if got := texts(t, bob, conv); len(got) != 2 {
		t.Fatalf("bob shows %q: the drop did not happen", got)
	}
	// Message 4 shows bob the gap; he asks, alice resends, and bob has the first four before the chat goes on.
	send(t, ctx, alice, conv, want[3])
	waitTexts(t, bob, conv, want[:4])
	recovery := lossy.since(mark + 1)
	for _, text := range want[4:] {
		send(t, ctx, alice, conv, text)
	}

	// Bob ends with all six, in order, each reported to the application once.
	waitTexts(t, bob, conv, want)
	bob.Close()
	bobEvents.wg.Wait()

	var gaps []*client.GapEvent
	perSeq := map[uint64]int{}
	for _, ev := range bobEvents.snapshot() {
		switch ev := ev.(type) {
		case *client.GapEvent:
			gaps = append(gaps, ev)
		case *client.MessageEvent:
			if ev.Message.Conversation == conv && ev.Message.SenderDevice == alice.Device() {
				perSeq[ev.Message.Seq]++
			}
		}
	}
	if len(gaps) != 1 {
		t.Fatalf("bob got %d gap events %+v, want 1", len(gaps), gaps)
	}
	gap := gaps[0]
	if gap.Reason != client.GapMissing || gap.Conversation != conv || gap.SenderDevice != alice.Device() ||
		gap.Count != 1 || !slices.Equal(gap.Seqs, []uint64{3}) {
		t.Fatalf("gap event %+v, want message 3 of alice's device missing in the conversation", gap)
	}
	for seq := uint64(1); seq <= 6; seq++ {
		if perSeq[seq] != 1 {
			t.Fatalf("message %d reached bob's application %d times (all: %v)", seq, perSeq[seq], perSeq)
		}
	}
	msgs, err := bob.Messages(conv)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range msgs {
		if m.Seq != uint64(i+1) || m.SenderDevice != alice.Device() {
			t.Fatalf("bob's history holds message %d of %s at position %d", m.Seq, m.SenderDevice, i+1)
		}
	}

	// On the grid, between the drop and message 5: message 4 to bob, then an envelope from bob's device to
	// alice's (the resend request: bob's application sent nothing), then one from alice's device to bob's (the
	// resend of message 3: alice's application sent nothing more).
	bobDev, aliceDev := wire.DeviceID(bob.Device()), wire.DeviceID(alice.Device())
	req := slices.IndexFunc(recovery, func(e seenEnvelope) bool { return e.from == bobDev && e.to == aliceDev })
	if req < 0 {
		t.Fatalf("no envelope from bob's device reached alice's after the drop (seen %+v): no resend request", recovery)
	}
	if recovery[req].node != 0 {
		t.Fatalf("the resend request was pushed by node %d, want alice's gateway 0", recovery[req].node)
	}
	if !slices.ContainsFunc(recovery[:req], func(e seenEnvelope) bool { return e.from == aliceDev && e.to == bobDev }) {
		t.Fatal("the resend request went out before message 4 showed the gap")
	}
	if !slices.ContainsFunc(recovery[req+1:], func(e seenEnvelope) bool {
		return e.from == aliceDev && e.to == bobDev && e.id != dropped[0].id && !e.dropped
	}) {
		t.Fatal("alice's device sent bob's nothing after the resend request")
	}
}
