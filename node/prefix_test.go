package node_test

import (
	"context"
	"slices"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/iagon/gridchat/gateway/gatewaytest"
	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/node"
	"github.com/iagon/gridchat/wire"
)

// withPrefix gives every node of a swarm the protocol prefix p.
func withPrefix(p string) gridtest.Option {
	return gridtest.Configure(func(_ int, cfg *node.Config) { cfg.ProtocolPrefix = p })
}

// speaks reports which of ids nd's host serves.
func speaks(nd *node.Node, ids ...protocol.ID) []protocol.ID {
	var out []protocol.ID
	for _, id := range ids {
		if slices.Contains(nd.Host().Mux().Protocols(), id) {
			out = append(out, id)
		}
	}
	return out
}

func TestDefaultProtocolPrefixKeepsTodaysProtocolIDsAndTopics(t *testing.T) {
	nd := gridtest.Swarm(t, 1)[0]
	if got := nd.Host().Mux().Protocols(); len(speaks(nd,
		"/gridchat/kad/1.0.0", "/gridchat/deliver/1.0.0", "/gridchat/mailbox/1.0.0", "/gridchat/witness/1.0.0")) != 4 {
		t.Fatalf("a node with the default prefix serves %v", got)
	}
	topics := nd.PubSub().GetTopics()
	for _, want := range []string{"/gridchat/presence/1", "/gridchat/checkpoints/1", "/gridchat/directory/1",
		"/gridchat/directory-keys/1"} {
		if !slices.Contains(topics, want) {
			t.Errorf("a node with the default prefix follows %v, not %s", topics, want)
		}
	}
}

// crossLink subscribes a and b to a topic of the test's own and waits until each sees the other on it: their
// gossipsub routers then talk, so what they do not exchange is kept apart by topic names alone.
func crossLink(t *testing.T, a, b *node.Node) {
	t.Helper()
	const topic = "/prefix-test/cross/1"
	var topics []*pubsub.Topic
	for _, nd := range []*node.Node{a, b} {
		tp, _ := subscribe(t, nd, topic)
		topics = append(topics, tp)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := pollUntil(ctx, func() bool {
		return slices.Contains(topics[0].ListPeers(), b.ID()) && slices.Contains(topics[1].ListPeers(), a.ID())
	})
	if err != nil {
		t.Fatalf("gossipsub of %s and %s never linked: %v", a.ID(), b.ID(), err)
	}
}

func TestGridsWithDifferentProtocolPrefixesShareNoDeliveryDirectoryPresenceOrCheckpoints(t *testing.T) {
	gx := gridtest.Swarm(t, 2, withPrefix("/gridx"))
	gy := gridtest.Swarm(t, 2, withPrefix("/gridy"))
	ctx := deliveryCtx(t)
	for _, x := range gx {
		for _, y := range gy {
			if err := x.Host().Connect(ctx, peer.AddrInfo{ID: y.ID(), Addrs: y.Addrs()}); err != nil {
				t.Fatalf("connect %s to %s: %v", x.ID(), y.ID(), err)
			}
		}
	}
	crossLink(t, gx[0], gy[0])

	// Each node serves and follows its own grid's names only.
	for g, grid := range map[string][]*node.Node{"/gridx": gx, "/gridy": gy} {
		for _, nd := range grid {
			own := []protocol.ID{protocol.ID(g + "/kad/1.0.0"), protocol.ID(g + "/deliver/1.0.0"),
				protocol.ID(g + "/mailbox/1.0.0"), protocol.ID(g + "/witness/1.0.0")}
			if got := speaks(nd, own...); len(got) != len(own) {
				t.Fatalf("node of %s serves %v, want all of %v", g, nd.Host().Mux().Protocols(), own)
			}
			if got := speaks(nd, "/gridchat/kad/1.0.0", "/gridchat/deliver/1.0.0", "/gridchat/mailbox/1.0.0",
				"/gridchat/witness/1.0.0"); len(got) > 0 {
				t.Fatalf("node of %s serves the default grid's %v", g, got)
			}
			topics := nd.PubSub().GetTopics()
			for _, want := range []string{g + "/presence/1", g + "/checkpoints/1", g + "/directory/1", g + "/directory-keys/1"} {
				if !slices.Contains(topics, want) {
					t.Fatalf("node of %s follows %v, not %s", g, topics, want)
				}
			}
			for _, other := range []string{"/gridchat/presence/1", "/gridchat/checkpoints/1", "/gridchat/directory/1",
				"/gridchat/directory-keys/1"} {
				if slices.Contains(topics, other) {
					t.Fatalf("node of %s follows the default grid's %s", g, other)
				}
			}
		}
	}

	// Grid X works inside itself: a send from node X0 reaches a device on X1.
	alice, bob := registerAccount(t, gx[0]), registerAccount(t, gx[1])
	ca := connect(t, gx[0], alice.devs[0], gatewaytest.Options{})
	cb := connect(t, gx[1], bob.devs[0], gatewaytest.Options{})
	waitLocated(t, gx[0], gx[1], bob.devs[0])
	pending, err := ca.StartSend(ctx, msgID(1), []byte("inside x"), bob.devs[0].ID())
	if err != nil {
		t.Fatal(err)
	}
	e, err := cb.NextEnvelope(ctx)
	if err != nil || string(e.Ciphertext) != "inside x" {
		t.Fatalf("bob's envelope: %+v %v", e, err)
	}
	if err := cb.Ack(ctx, e); err != nil {
		t.Fatal(err)
	}
	r, err := gatewaytest.WaitSend(ctx, pending)
	if err != nil {
		t.Fatal(err)
	}
	if st := r.Results[0].Status; st != wire.StatusDelivered {
		t.Fatalf("send within grid X: status %s %s, want delivered", st, r.Results[0].Reason)
	}

	// Grid X gossiped directory records, presence and checkpoints within itself (X1 cosigned X0's log and
	// gossiped what it cosigned) while its nodes' gossipsub talked to grid Y's...
	xGossip := func() bool {
		return gauge(t, gx[1], "gridchat_directory_announcements_total") > 0 &&
			gauge(t, gx[0], "gridchat_presence_received_total") > 0 &&
			gauge(t, gx[1], "gridchat_witness_requests_total") > 0 &&
			gauge(t, gx[0], "gridchat_witness_gossip_total") > 0
	}
	if err := pollUntil(ctx, xGossip); err != nil {
		t.Fatalf("no presence or checkpoint gossip within grid X: %v", err)
	}
	// ...and none of it reached grid Y, which has had no device and no log entry of its own yet.
	for i, y := range gy {
		for _, m := range []string{"gridchat_directory_announcements_total", "gridchat_presence_received_total",
			"gridchat_witness_requests_total", "gridchat_witness_gossip_total"} {
			if v := gauge(t, y, m); v != 0 {
				t.Errorf("node Y%d: %s = %v: grid X's traffic crossed", i, m, v)
			}
		}
	}
	if loc, err := gy[0].Presence().Locate(ctx, wire.DeviceID(bob.devs[0].ID())); err == nil {
		t.Fatalf("grid Y locates grid X's device at %s", loc.Gateway)
	}

	// Grid Y's nodes cannot open grid X's nodes' services under their own names...
	for _, id := range []protocol.ID{"/gridy/deliver/1.0.0", "/gridy/mailbox/1.0.0", "/gridy/witness/1.0.0"} {
		if st, err := gy[0].Host().NewStream(ctx, gx[1].ID(), id); err == nil {
			st.Reset()
			t.Fatalf("node Y0 opened %s on node X1", id)
		}
	}
	// ...so a device on grid Y sending to bob through Y0 does not reach him.
	carol := registerAccount(t, gy[0])
	cc := connect(t, gy[0], carol.devs[0], gatewaytest.Options{})
	r, err = cc.Send(ctx, msgID(2), []byte("from y"), bob.devs[0].ID())
	if err != nil {
		t.Fatal(err)
	}
	if st := r.Results[0].Status; st == wire.StatusDelivered {
		t.Fatalf("send from grid Y to grid X's device: status %s", st)
	}
	t.Logf("grid Y's send to grid X's device: status %s %s", r.Results[0].Status, r.Results[0].Reason)
	qctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if e, err := cb.NextEnvelope(qctx); err == nil {
		t.Fatalf("bob got %q through grid Y", e.Ciphertext)
	}
}
