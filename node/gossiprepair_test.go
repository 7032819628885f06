package node_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"

	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/keyregistry"
	"github.com/iagon/gridchat/node"
)

// gossipTopic is the topic the gossip repair tests publish on.
const gossipTopic = "/gridchat/gossip-repair-test/1"

// gossipPair is two nodes with a fast gossip watchdog (reconnecting after
// reconnectGrace), not yet connected, both subscribed to gossipTopic.
type gossipPair struct {
	nodes  [2]*node.Node
	topics [2]*pubsub.Topic
	subs   [2]*pubsub.Subscription
}

func newGossipPair(t *testing.T, reconnectGrace time.Duration) *gossipPair {
	t.Helper()
	var g gossipPair
	for i := range g.nodes {
		cfg := gridtest.NodeConfig(t, i, gridtest.InMemory(), gridtest.Configure(func(_ int, c *node.Config) {
			c.GossipRepair = node.GossipRepairSettings{
				Interval:       50 * time.Millisecond,
				Grace:          200 * time.Millisecond,
				ReconnectGrace: reconnectGrace,
				MaxBackoff:     time.Second,
			}
		}))
		nd, err := node.New(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = nd.Close() })
		g.nodes[i] = nd
		// The subscription and topic close before their node.
		g.topics[i], g.subs[i] = subscribe(t, nd, gossipTopic)
	}
	return &g
}

func (g *gossipPair) connect(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := g.nodes[0].Host().Connect(ctx, g.nodes[1].AddrInfo()); err != nil {
		t.Fatal(err)
	}
}

// lists reports whether node i's gossipsub has an outbound stream to the
// other node and counts it as a subscriber of topic ("" for any).
func (g *gossipPair) lists(i int, topic string) bool {
	return slices.Contains(g.nodes[i].PubSub().ListPeers(topic), g.nodes[1-i].ID())
}

// waitFor polls cond until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond) // polling gossipsub's state with a deadline
	}
	return true
}

// gossipFlows publishes from node from until node to receives one of its
// messages, for at most d.
func (g *gossipPair) gossipFlows(t *testing.T, from int, d time.Duration) error {
	t.Helper()
	to := 1 - from
	deadline := time.Now().Add(d)
	for i := 0; time.Now().Before(deadline); i++ {
		if err := g.topics[from].Publish(context.Background(), fmt.Appendf(nil, "from %d #%d", from, i)); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		for {
			msg, err := g.subs[to].Next(ctx)
			if err != nil {
				break
			}
			if msg.ReceivedFrom == g.nodes[from].ID() {
				cancel()
				return nil
			}
		}
		cancel()
	}
	return fmt.Errorf("node %d's messages did not reach node %d in %v (node %d lists node %d: stream %v, topic %v)",
		from, to, d, from, to, g.lists(from, ""), g.lists(from, gossipTopic))
}

// repairs reads one action's count of gridchat_pubsub_repairs_total.
func repairs(t *testing.T, nd *node.Node, action string) float64 {
	t.Helper()
	return labelledCounter(t, nd, "gridchat_pubsub_repairs_total", "action", action)
}

// TestGossipReachesPeerWhoseFirstStreamFailedToOpen makes node 0's first
// gossipsub stream to node 1 fail to open: before they connect, the test
// takes every outbound stream slot that node 0's resource manager allows
// per peer for the gossipsub protocol both prefer, so the open fails at
// protocol selection. gossipsub does not retry a failed open while the
// connection lasts; the watchdog makes it open the stream again once the
// slots are free, and gossip flows both ways without a reconnect.
func TestGossipReachesPeerWhoseFirstStreamFailedToOpen(t *testing.T) {
	// Node 1 sees node 0 missing from the directory topic too; its
	// reconnect waits longer than the test needs.
	g := newGossipPair(t, time.Minute)
	a, b := g.nodes[0], g.nodes[1]

	rm := a.Host().Network().ResourceManager()
	var held []network.StreamManagementScope
	var releaseOnce sync.Once
	release := func() {
		releaseOnce.Do(func() {
			for _, s := range held {
				s.Done()
			}
		})
	}
	t.Cleanup(release)
	for {
		s, err := rm.OpenStream(b.ID(), network.DirOutbound)
		if err != nil {
			t.Fatalf("after %d streams the peer's stream limit refused before the protocol's: %v", len(held), err)
		}
		if err := s.SetProtocol(pubsub.GossipSubDefaultProtocols[0]); err != nil {
			s.Done()
			break
		}
		held = append(held, s)
		if len(held) > 10_000 {
			t.Fatal("no per-peer stream limit for the gossipsub protocol")
		}
	}
	t.Logf("holding %d outbound %s stream slots for node 1", len(held), pubsub.GossipSubDefaultProtocols[0])

	g.connect(t)
	// Node 1's stream to node 0 opens; node 0's to node 1 cannot.
	if !waitFor(20*time.Second, func() bool { return g.lists(1, "") }) {
		t.Fatal("node 1 never opened its gossipsub stream to node 0")
	}
	// Keep the opens failing while the watchdog retries (with the watchdog,
	// until it has tried twice; without it, for as long).
	waitFor(3*time.Second, func() bool { return repairs(t, a, "renotify") >= 2 })
	if g.lists(0, "") {
		t.Fatal("node 0 opened a gossipsub stream to node 1 while its stream slots were taken")
	}
	release()

	if err := g.gossipFlows(t, 0, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := g.gossipFlows(t, 1, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := repairs(t, a, "renotify"); n < 1 {
		t.Errorf("node 0 counted %v renotify repairs, want at least 1", n)
	}
	if n := repairs(t, a, "reconnect"); n != 0 {
		t.Errorf("node 0 counted %v reconnect repairs, want 0 (re-announcing the protocols is enough)", n)
	}
	if n := repairs(t, b, "reconnect"); n != 0 {
		t.Errorf("node 1 counted %v reconnect repairs, want 0", n)
	}
	if got := len(a.Host().Network().ConnsToPeer(b.ID())); got == 0 {
		t.Error("node 0 is no longer connected to node 1")
	}
}

// TestGossipReachesPeerAfterStreamResetRightAfterConnect resets node 0's
// gossipsub stream to node 1 right after they meet. gossipsub reopens it but
// forgets the topics node 1 had announced, and node 1 does not announce them
// again, so node 0 stops publishing to node 1. The watchdog sees node 1
// missing from the directory topic and reconnects the pair; gossip flows
// again both ways.
func TestGossipReachesPeerAfterStreamResetRightAfterConnect(t *testing.T) {
	g := newGossipPair(t, 500*time.Millisecond)
	a, b := g.nodes[0], g.nodes[1]
	g.connect(t)
	dirTopic := keyregistry.TopicFor("")
	if !waitFor(20*time.Second, func() bool {
		return g.lists(0, gossipTopic) && g.lists(0, dirTopic) && g.lists(1, gossipTopic)
	}) {
		t.Fatal("the pair never saw each other's subscriptions")
	}
	before := repairs(t, a, "reconnect")

	reset := 0
	for _, c := range a.Host().Network().ConnsToPeer(b.ID()) {
		for _, s := range c.GetStreams() {
			if s.Stat().Direction == network.DirOutbound && slices.Contains(pubsub.GossipSubDefaultProtocols, s.Protocol()) {
				_ = s.Reset()
				reset++
			}
		}
	}
	if reset == 0 {
		t.Fatal("node 0 has no outbound gossipsub stream to node 1")
	}
	if err := g.gossipFlows(t, 0, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := g.gossipFlows(t, 1, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := repairs(t, a, "reconnect"); n <= before {
		t.Errorf("node 0 counted %v reconnect repairs, want more than %v", n, before)
	}
}

// TestGossipRepairLeavesHealthyPeersAlone checks that the watchdog does not
// touch a pair whose gossip works.
func TestGossipRepairLeavesHealthyPeersAlone(t *testing.T) {
	g := newGossipPair(t, 500*time.Millisecond)
	g.connect(t)
	if err := g.gossipFlows(t, 0, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	conn := g.nodes[0].Host().Network().ConnsToPeer(g.nodes[1].ID())
	// Several times the watchdog's grace and backoff.
	time.Sleep(2 * time.Second) // letting the watchdog tick; nothing is expected to change
	for i, nd := range g.nodes {
		for _, action := range []string{"renotify", "reconnect"} {
			if n := repairs(t, nd, action); n != 0 {
				t.Errorf("node %d counted %v %s repairs of a healthy peer", i, n, action)
			}
		}
	}
	if now := g.nodes[0].Host().Network().ConnsToPeer(g.nodes[1].ID()); len(now) == 0 || len(conn) == 0 || now[0] != conn[0] {
		t.Error("the healthy pair's connection changed")
	}
}
