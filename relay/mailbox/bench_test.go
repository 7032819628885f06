package mailbox_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/node"
	"github.com/iagon/gridchat/relay/mailbox"
	"github.com/iagon/gridchat/wire"
)

// heapInUse returns the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

func sampleHeap() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// BenchmarkStoreThenFetch stores n 1 KiB envelopes for one device through a 3-node grid (quorum puts with
// receipts, synced to disk) and then fetches and acknowledges them all from another node. The 1,000-envelope
// case is the baseline of the same run: a flat heap means the fetch's peak heap growth does not scale with n.
// Reported: puts/s, envelopes fetched/s, and the peak heap growth during the fetch in MiB.
func BenchmarkStoreThenFetch(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("envelopes=%d", n), func(b *testing.B) {
			nodes := gridtest.Swarm(b, 3, noLoops(func(cfg *node.Config) { cfg.Mailbox.Limits.MaxPerSender = 20_000 }))
			a, dev := newDevice(b), newDevice(b)
			ctx := context.Background()
			ct := make([]byte, 1024)
			for b.Loop() {
				start := time.Now()
				for i := range n {
					env := envelope(b, did(a), did(dev), i)
					env.Ciphertext = append(fmt.Appendf(nil, "ciphertext %06d ", i), ct...)
					if _, err := nodes[0].Mailbox().PutEnvelope(ctx, env); err != nil {
						b.Fatal(err)
					}
				}
				putDur := time.Since(start)
				base := heapInUse()
				peak := base
				start = time.Now()
				req, err := mailbox.NewFetchRequest(dev, false, time.Now())
				if err != nil {
					b.Fatal(err)
				}
				ss, err := nodes[2].Mailbox().Open(ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				got := 0
				var batch []wire.MessageID
				for {
					it, err := ss.Next(ctx)
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
					got++
					batch = append(batch, it.Envelope.MessageID)
					if len(batch) == 256 {
						if err := ss.Ack(ctx, batch...); err != nil {
							b.Fatal(err)
						}
						batch = batch[:0]
					}
					if got%250 == 0 {
						peak = max(peak, sampleHeap())
					}
				}
				if err := ss.Ack(ctx, batch...); err != nil {
					b.Fatal(err)
				}
				if err := ss.Flush(ctx); err != nil {
					b.Fatal(err)
				}
				ss.Close()
				fetchDur := time.Since(start)
				if got != n {
					b.Fatalf("fetched %d of %d", got, n)
				}
				b.ReportMetric(float64(n)/putDur.Seconds(), "puts/s")
				b.ReportMetric(float64(n)/fetchDur.Seconds(), "fetched/s")
				b.ReportMetric(float64(peak-base)/(1<<20), "fetch-heap-MiB")
			}
		})
	}
}
