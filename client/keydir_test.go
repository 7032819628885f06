package client_test

import (
	"testing"
	"time"

	"github.com/iagon/gridchat/client"
)

// A device that registered and went offline before anyone messaged it has its signed messaging key in the
// directory: a first message to it is sealed at once (no key request, no KeyWait) and arrives through the
// mailbox when the device comes online.
func TestFirstMessageToDeviceThatWentOfflineAfterRegisteringArrives(t *testing.T) {
	g := newGrid(t, 3)
	bobCfg := g.config(1)
	bob, err := client.Register(g.ctx, bobCfg, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if err := bob.WaitConnected(g.ctx); err != nil {
		t.Fatal(err)
	}
	// Bob publishes his key after authenticating; wait until the grid serves it, then take him offline.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := g.nodes[0].Directory().LookupKey(g.ctx, bob.Device())
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Bob's messaging key never reached the directory: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	bobDev := bob.Device()
	bob.Close()

	aliceCfg := g.config(0)
	// Far below the time a key request would need: the key must come from the directory.
	aliceCfg.KeyWait = 200 * time.Millisecond
	alice, err := client.Register(g.ctx, aliceCfg, "alice")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { alice.Close() })
	if err := alice.WaitConnected(g.ctx); err != nil {
		t.Fatal(err)
	}
	conv := mustDirect(t, g.ctx, alice, "bob")
	drain(alice)
	send(t, g.ctx, alice, conv, "hello, offline bob")
	stored := false
	for _, st := range deliveryStatuses(t, alice) {
		if st.Device == bobDev && st.Status == "stored" {
			stored = true
		}
	}
	if !stored {
		t.Fatalf("the message to offline Bob was not stored in his mailbox: %+v", deliveryStatuses(t, alice))
	}

	bobCfg.Gateways = []string{g.nodes[2].GatewayURL()}
	bob, err = client.Open(g.ctx, bobCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	waitTexts(t, bob, conv, []string{"hello, offline bob"})
}
