package gridtest

import (
	"context"
	"strings"
	"testing"
	"time"

	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/iagon/gridchat/node"
)

func TestMain(m *testing.M) { VerifyTestMain(m) }

func TestSwarmAppliesOptionsAndFormsMesh(t *testing.T) {
	seen := map[int]bool{}
	nodes := Swarm(t, 3, InMemory(), Configure(func(i int, cfg *node.Config) {
		seen[i] = true
		cfg.MaxRecordSize = 1000 + i
	}))
	if len(seen) != 3 {
		t.Errorf("Configure saw nodes %v, want 0, 1, 2", seen)
	}
	for i, n := range nodes {
		if _, ok := n.Datastore().(*dssync.MutexDatastore); !ok {
			t.Errorf("node %d datastore is %T, want the in-memory one", i, n.Datastore())
		}
		if got := n.DHT().Validator().MaxValueSize(); got != 1000+i {
			t.Errorf("node %d max record size %d, want %d", i, got, 1000+i)
		}
		if n.RoutingTableSize() != 2 {
			t.Errorf("node %d routing table has %d peers, want 2", i, n.RoutingTableSize())
		}
		if !strings.HasPrefix(n.GatewayURL(), "http://127.0.0.1:") {
			t.Errorf("node %d gateway %s is not on loopback", i, n.GatewayURL())
		}
		for _, a := range n.Addrs() {
			if !strings.HasPrefix(a.String(), "/ip4/127.0.0.1/") {
				t.Errorf("node %d listens on %s, not loopback", i, a)
			}
		}
	}
}

func TestWaitFormedNamesTheShortNodes(t *testing.T) {
	nodes := Swarm(t, 2, InMemory(), WaitForPeers(0))
	if err := WaitFormed(context.Background(), nodes, 1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// Nobody can have 5 peers in a grid of two.
	err := WaitFormed(context.Background(), nodes, 5, 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "node 0 has 1") || !strings.Contains(err.Error(), "node 1 has 1") {
		t.Fatalf("WaitFormed = %v", err)
	}
}
