package node_test

import (
	"fmt"
	"testing"

	"github.com/iagon/gridchat/internal/gridtest"
)

// BenchmarkSwarmFormation measures the time from the first node.New of an
// in-process swarm on 127.0.0.1 (Pebble datastores on disk) until every
// node's routing table holds every other node. nodes=1 is the baseline in
// the same run: the cost of starting one bare node.
func BenchmarkSwarmFormation(b *testing.B) {
	for _, n := range []int{1, 20} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			for b.Loop() {
				nodes := gridtest.Swarm(b, n) // returns once every table is full
				b.StopTimer()
				for _, nd := range nodes {
					if err := nd.Close(); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
			}
		})
	}
}
