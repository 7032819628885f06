package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/iagon/gridchat/internal/gridtest"
)

// BenchmarkSwarmFormation measures the time from the first node.New of an
// in-process swarm on 127.0.0.1 (Pebble datastores on disk; node i > 0
// bootstraps from node 0) until every node's routing table holds every other
// node. nodes=1 is the baseline in the same run: the cost of starting one
// bare node. start-ms is the part spent in node.New, form-ms the wait for the
// routing tables after the last node started.
func BenchmarkSwarmFormation(b *testing.B) {
	for _, n := range []int{1, 20} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			var start, form time.Duration
			for b.Loop() {
				t0 := time.Now()
				nodes := gridtest.Swarm(b, n, gridtest.WaitForPeers(0))
				t1 := time.Now()
				if err := gridtest.WaitFormed(context.Background(), nodes, n-1, time.Minute); err != nil {
					b.Fatal(err)
				}
				start, form = start+t1.Sub(t0), form+time.Since(t1)
				b.StopTimer()
				for _, nd := range nodes {
					if err := nd.Close(); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(start.Milliseconds())/float64(b.N), "start-ms/op")
			b.ReportMetric(float64(form.Milliseconds())/float64(b.N), "form-ms/op")
		})
	}
}
