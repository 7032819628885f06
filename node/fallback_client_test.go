package node_test

import (
	"context"
	"crypto/rand"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/iagon/gridchat/client"
	"github.com/iagon/gridchat/client/store"
	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/node"
	"github.com/iagon/gridchat/wire"
)

// TestClientWhoseAcksAreLateShowsEachMessageOnce: bob's gateway (node 1) times out every push before his client
// can acknowledge it, so every envelope alice sends him is stored in his mailbox while his client did receive
// the live push. Alice's client sees "stored" with verified receipts; bob's client shows each message once;
// after bob moves to node 2 the mailbox's copies are delivered as duplicates, acknowledged and deleted.
func TestClientWhoseAcksAreLateShowsEachMessageOnce(t *testing.T) {
	nodes := gridtest.Swarm(t, 3, gridtest.InMemory(), gridtest.Configure(func(i int, cfg *node.Config) {
		if i == 1 {
			cfg.Delivery.WS.AckTimeout = time.Nanosecond
		}
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	config := func(i int) client.Config {
		key := make([]byte, store.KeySize)
		_, _ = rand.Read(key)
		return client.Config{Dir: t.TempDir(), StoreKey: key, NoSync: true, DirectoryTTL: 300 * time.Millisecond,
			ResendInterval: 500 * time.Millisecond, MaxBackoff: time.Second,
			Gateways: []string{nodes[i].GatewayURL()},
			Logger:   slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))}
	}
	alice, err := client.Register(ctx, config(0), "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	bobCfg := config(1)
	bob, err := client.Register(ctx, bobCfg, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if err := bob.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	cv, err := alice.StartDirect(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"one", "two", "three"}
	for _, text := range want {
		if _, err := alice.SendText(ctx, cv.ID, text); err != nil {
			t.Fatal(err)
		}
	}
	stored := 0
	for stored < len(want) {
		select {
		case ev := <-alice.Events():
			if d, ok := ev.(*client.DeliveryEvent); ok {
				for _, st := range d.Statuses {
					if st.Device == bob.Device() {
						if st.Status != wire.StatusStored || st.Receipts < 2 {
							t.Fatalf("to bob: %+v, want stored with verified receipts", st)
						}
						stored++
					}
				}
			}
		case <-ctx.Done():
			t.Fatalf("%d of %d delivery events", stored, len(want))
		}
	}
	bobTexts := func(c *client.Client) []string {
		ms, _ := c.Messages(cv.ID)
		var out []string
		for _, m := range ms {
			if m.Type == client.PayloadText {
				out = append(out, m.Text)
			}
		}
		return out
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for !ok() {
			select {
			case <-ctx.Done():
				t.Fatalf("%s: bob shows %q", what, bobTexts(bob))
			case <-time.After(20 * time.Millisecond): // polling with the test's deadline
			}
		}
	}
	waitFor("live pushes", func() bool { return slices.Equal(bobTexts(bob), want) })
	bob.Close()
	bobCfg.Gateways = []string{nodes[2].GatewayURL()}
	bob, err = client.Open(ctx, bobCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	dev := wire.DeviceID(bob.Device())
	waitFor("mailbox emptied", func() bool {
		for _, nd := range nodes {
			if n, err := nd.Mailbox().Store().Count(ctx, dev); err != nil || n != 0 {
				return false
			}
		}
		return true
	})
	if got := bobTexts(bob); !slices.Equal(got, want) {
		t.Fatalf("bob shows %q after the mailbox's copies, want %q once each", got, want)
	}
}
