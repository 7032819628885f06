package node_test

import (
	"testing"

	"github.com/iagon/gridchat/internal/gridtest"
)

func TestMain(m *testing.M) { gridtest.VerifyTestMain(m) }

func TestSwarmOfFiveFormsFullRoutingTables(t *testing.T) {
	nodes := gridtest.Swarm(t, 5)
	for i, nd := range nodes {
		rt := nd.DHT().RoutingTable()
		for j, other := range nodes {
			if i == j {
				continue
			}
			if rt.Find(other.ID()) == "" {
				t.Errorf("node %d's routing table lacks node %d", i, j)
			}
		}
		if got := rt.Size(); got != len(nodes)-1 {
			t.Errorf("node %d's routing table has %d peers, want %d", i, got, len(nodes)-1)
		}
	}
}
