package client_test

import (
	"fmt"
	"testing"

	"github.com/iagon/gridchat/client"
)

// Acceptance 2: Bob is offline while Alice sends 50 messages; he comes back on another node and gets them all,
// in order.
func TestOfflineRecipientGetsFiftyMessagesInOrderOnAnotherNode(t *testing.T) {
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
	send(t, g.ctx, alice, conv, "before")
	waitTexts(t, bob, conv, []string{"before"})
	bob.Close()

	want := []string{"before"}
	drain(alice)
	for i := range 50 {
		text := fmt.Sprintf("offline message %02d", i)
		send(t, g.ctx, alice, conv, text)
		want = append(want, text)
		// Every send to the offline device is stored, with verified receipts from a quorum of replicas.
		for _, st := range deliveryStatuses(t, alice) {
			if st.Device == bob.Device() && (st.Status != "stored" || st.Receipts < 2) {
				t.Fatalf("message %d to offline Bob: status %s (%s) with %d receipts", i, st.Status, st.Reason, st.Receipts)
			}
		}
	}
	bobCfg.Gateways = []string{g.nodes[2].GatewayURL()}
	bob, err = client.Open(g.ctx, bobCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	waitTexts(t, bob, conv, want)
}
