package node_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	dsq "github.com/ipfs/go-datastore/query"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/iagon/gridchat/dht"
	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/node"
)

// errNotPrefixed is the reason prefixValidator gives for a bad record.
var errNotPrefixed = errors.New("value does not start with \"valid:\"")

// prefixValidator accepts values that start with "valid:" and prefers the
// lexicographically greatest one: a small, real validator for the "test"
// namespace.
type prefixValidator struct{}

func (prefixValidator) Validate(_ string, value []byte) error {
	if !bytes.HasPrefix(value, []byte("valid:")) {
		return errNotPrefixed
	}
	return nil
}

func (prefixValidator) Select(_ string, values [][]byte) (int, error) {
	best := 0
	for i, v := range values {
		if bytes.Compare(v, values[best]) > 0 {
			best = i
		}
	}
	return best, nil
}

// acceptAll stands in for a misbehaving node's validator.
type acceptAll struct{}

func (acceptAll) Validate(string, []byte) error        { return nil }
func (acceptAll) Select(string, [][]byte) (int, error) { return 0, nil }

var testValidators = map[string]record.Validator{"test": prefixValidator{}}

// blockGater refuses every connection to or from the peers it blocks.
type blockGater struct {
	mu      sync.Mutex
	blocked map[peer.ID]bool
}

func (g *blockGater) block(p peer.ID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.blocked == nil {
		g.blocked = make(map[peer.ID]bool)
	}
	g.blocked[p] = true
}

func (g *blockGater) allowed(p peer.ID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.blocked[p]
}

func (g *blockGater) InterceptPeerDial(p peer.ID) bool                        { return g.allowed(p) }
func (g *blockGater) InterceptAddrDial(p peer.ID, _ multiaddr.Multiaddr) bool { return g.allowed(p) }
func (g *blockGater) InterceptAccept(network.ConnMultiaddrs) bool             { return true }
func (g *blockGater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.allowed(p)
}
func (g *blockGater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) {
	return true, 0
}

// storedUnder counts the DHT records a node keeps in namespace ns.
func storedUnder(t *testing.T, n *node.Node, ns string) int {
	t.Helper()
	res, err := n.Datastore().Query(t.Context(), dsq.Query{Prefix: "/dht/" + ns, KeysOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	all, err := res.Rest()
	if err != nil {
		t.Fatal(err)
	}
	return len(all)
}

func TestRecordPutByNodeOneIsGotByNodeFiveWithoutDirectConnection(t *testing.T) {
	gaters := []*blockGater{{}, {}}
	nodes := gridtest.Swarm(t, 5,
		gridtest.Validators(testValidators),
		gridtest.Configure(func(i int, cfg *node.Config) {
			switch i {
			case 0:
				cfg.ConnectionGater = gaters[0]
			case 4:
				cfg.ConnectionGater = gaters[1]
			}
		}))
	n1, n5 := nodes[0], nodes[4]

	// Partition nodes 1 and 5 from each other; the rest of the grid links them.
	gaters[0].block(n5.ID())
	gaters[1].block(n1.ID())
	if err := n1.Host().Network().ClosePeer(n5.ID()); err != nil {
		t.Fatal(err)
	}
	if err := n5.Host().Network().ClosePeer(n1.ID()); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	const key = "/test/greeting"
	value := []byte("valid: hello from node 1")
	if err := n1.DHT().PutValue(ctx, key, value); err != nil {
		t.Fatalf("node 1 put: %v", err)
	}
	if got := storedUnder(t, n5, "test"); got != 0 {
		t.Fatalf("node 5 holds %d records before asking: the put reached it directly", got)
	}

	got, err := n5.DHT().GetValue(ctx, key)
	if err != nil {
		t.Fatalf("node 5 get: %v", err)
	}
	if !bytes.Equal(got, value) {
		t.Fatalf("node 5 got %q, want %q", got, value)
	}
	if c := n5.Host().Network().Connectedness(n1.ID()); c == network.Connected {
		t.Fatal("nodes 1 and 5 are connected; the record did not have to cross the grid")
	}
}

func TestInvalidRecordIsRefusedWithTheReason(t *testing.T) {
	nodes := gridtest.Swarm(t, 3, gridtest.Validators(testValidators), gridtest.InMemory())
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	err := nodes[0].DHT().PutValue(ctx, "/test/bad", []byte("not valid"))
	if !errors.Is(err, dht.ErrInvalidRecord) || !errors.Is(err, errNotPrefixed) {
		t.Fatalf("put of invalid record: err = %v, want ErrInvalidRecord wrapping the validator's reason", err)
	}
	if !strings.Contains(err.Error(), errNotPrefixed.Error()) || !strings.Contains(err.Error(), `"test"`) {
		t.Errorf("error %q does not name the reason and namespace", err)
	}

	err = nodes[0].DHT().PutValue(ctx, "/nobody/x", []byte("valid: x"))
	if !errors.Is(err, dht.ErrUnknownNamespace) {
		t.Errorf("put in unregistered namespace: err = %v, want ErrUnknownNamespace", err)
	}

	big := append([]byte("valid:"), make([]byte, dht.DefaultMaxValueSize)...)
	err = nodes[0].DHT().PutValue(ctx, "/test/big", big)
	if !errors.Is(err, dht.ErrRecordTooLarge) {
		t.Errorf("put of oversized record: err = %v, want ErrRecordTooLarge", err)
	}
}

func TestGridRefusesInvalidRecordFromMisbehavingNode(t *testing.T) {
	// Node 0 skips validation of "test" records; the honest nodes must still
	// refuse to store or serve its bad record.
	nodes := gridtest.Swarm(t, 4, gridtest.InMemory(),
		gridtest.Configure(func(i int, cfg *node.Config) {
			if i == 0 {
				cfg.Validators = map[string]record.Validator{"test": acceptAll{}}
			} else {
				cfg.Validators = testValidators
			}
		}))
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := nodes[0].DHT().PutValue(ctx, "/test/forged", []byte("forged")); err != nil {
		t.Fatalf("misbehaving put: %v", err)
	}
	for i, n := range nodes[1:] {
		if got := storedUnder(t, n, "test"); got != 0 {
			t.Errorf("honest node %d stored %d invalid records", i+1, got)
		}
	}
	if v, err := nodes[3].DHT().GetValue(ctx, "/test/forged"); err == nil {
		t.Errorf("honest node got the invalid record %q", v)
	}
}

func TestGossipsubMessageFromNodeTwoReachesAllFive(t *testing.T) {
	nodes := gridtest.Swarm(t, 5, gridtest.InMemory())
	// Only guards against a hang: topic peers appear within seconds, more under -race on a loaded machine.
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	const topicName = "/gridchat/test/1"
	subs := make([]*pubsub.Subscription, len(nodes))
	topics := make([]*pubsub.Topic, len(nodes))
	for i, n := range nodes {
		topics[i], subs[i] = subscribe(t, n, topicName)
	}

	sender := topics[1]
	for i, tp := range topics {
		if err := pollUntil(ctx, func() bool { return len(tp.ListPeers()) == len(nodes)-1 }); err != nil {
			t.Fatalf("node %d sees %d topic peers, want %d: %v", i+1, len(tp.ListPeers()), len(nodes)-1, err)
		}
	}
	for i, n := range nodes {
		t.Logf("node %d %s conns=%d", i+1, n.ID(), len(n.Host().Network().Conns()))
	}
	msg := []byte("hello grid")
	if err := sender.Publish(ctx, msg); err != nil {
		t.Fatal(err)
	}
	for i, sub := range subs {
		m, err := sub.Next(ctx)
		if err != nil {
			t.Errorf("node %d: no message: %v", i+1, err)
			continue
		}
		if !bytes.Equal(m.Data, msg) || m.GetFrom() != nodes[1].ID() {
			t.Errorf("node %d got %q from %s, want %q from node 2", i+1, m.Data, m.GetFrom(), msg)
		}
	}
}

// pollUntil checks cond every 10 ms until it holds or ctx ends.
func pollUntil(ctx context.Context, cond func() bool) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("condition not met: %w", ctx.Err())
		}
	}
	return nil
}

// subscribe joins nd's gossipsub to topic and subscribes to it. When the test ends the subscription is cancelled
// and the topic closed, before nd closes if nd was started first (cleanups run last-registered first).
func subscribe(t *testing.T, nd *node.Node, topic string) (*pubsub.Topic, *pubsub.Subscription) {
	t.Helper()
	tp, err := nd.PubSub().Join(topic)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := tp.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Cancel(); _ = tp.Close() })
	return tp, sub
}
