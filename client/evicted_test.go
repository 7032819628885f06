package client_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/iagon/gridchat/client"
	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/node"
	"github.com/iagon/gridchat/wire"
)

// Issue 14, acceptance 3 (client side, count limit): envelopes pushed out of a full mailbox while the device is
// offline are reported, when it reconnects, as one gap event with the right count, sender and reason; the
// numbers the device then finds missing are asked for again, so it still ends with every message.
func TestEnvelopesPushedOutByCountLimitAreReportedAsGapOnReconnect(t *testing.T) {
	nodes := gridtest.Swarm(t, 3, gridtest.Configure(func(_ int, cfg *node.Config) {
		cfg.Mailbox.DisableLoops = true
		cfg.Mailbox.Limits.MaxCount = 3
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	g := &grid{t: t, nodes: nodes, ctx: ctx}
	alice := g.register("alice", 0)
	bobCfg := g.config(1)
	bob, err := client.Register(ctx, bobCfg, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if err := bob.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	conv := mustDirect(t, ctx, alice, "bob")
	want := []string{"hello"}
	send(t, ctx, alice, conv, want[0])
	waitTexts(t, bob, conv, want)
	bob.Close()
	for deadline := time.Now().Add(10 * time.Second); nodes[1].Hub().Connected(wire.DeviceID(bob.Device())); {
		if time.Now().After(deadline) {
			t.Fatal("bob's gateway still lists him 10 s after he closed")
		}
		time.Sleep(10 * time.Millisecond) // polling the gateway's connection table with a deadline
	}
	drain(alice)
	for i := range 5 {
		text := fmt.Sprintf("offline %d", i)
		send(t, ctx, alice, conv, text)
		want = append(want, text)
		for _, st := range deliveryStatuses(t, alice) {
			if st.Device == bob.Device() && st.Status != wire.StatusStored {
				t.Fatalf("message %d to offline bob: %s (%s), want stored", i, st.Status, st.Reason)
			}
		}
	}
	// The mailbox keeps the 3 newest: the 2 oldest were pushed out, on every replica.
	holders := 0
	for _, nd := range nodes {
		n, err := nd.Mailbox().Store().Count(ctx, wire.DeviceID(bob.Device()))
		if err != nil {
			t.Fatal(err)
		}
		if n > 3 {
			t.Fatalf("a replica holds %d envelopes over the count limit of 3", n)
		}
		if n == 3 {
			holders++
		}
	}
	if holders < 2 {
		t.Fatalf("%d replicas hold bob's 3 newest envelopes, want at least the write quorum", holders)
	}
	bobCfg.Gateways = []string{nodes[2].GatewayURL()}
	bob, err = client.Open(ctx, bobCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	deadline := time.After(30 * time.Second)
	for found := false; !found; {
		select {
		case ev := <-bob.Events():
			gap, ok := ev.(*client.GapEvent)
			if !ok || gap.Reason == client.GapMissing {
				continue
			}
			if gap.Reason != client.GapEvicted || gap.Count != 2 || gap.SenderDevice != alice.Device() {
				t.Fatalf("gap event %+v, want 2 evicted from alice's device", gap)
			}
			found = true
		case <-deadline:
			t.Fatal("no gap event for the envelopes pushed out by the count limit")
		}
	}
	// Bob then sees numbers 2 and 3 missing, asks alice's device, and ends with all six.
	waitTexts(t, bob, conv, want)
}
