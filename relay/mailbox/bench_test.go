package mailbox_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strconv"
	"strings"
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

var storeFetchSizes = flag.String("storefetch.sizes", "1000,10000",
	"mailbox sizes BenchmarkStoreThenFetch stores and fetches, comma-separated; the first is the baseline")

// BenchmarkStoreThenFetch stores n 1 KiB envelopes for one device through a 3-node grid (quorum puts with
// receipts, synced to disk) and then fetches and acknowledges them all from another node, for each n of
// -storefetch.sizes (default 1,000 and 10,000; -storefetch.sizes=1000,10000,50000 adds a case whose puts take
// minutes). The first size is the baseline of the same run: a flat heap means the fetch's peak heap growth does
// not scale with n, and a fetch-ratio near 1 means the per-envelope cost of a drain does not either.
// Reported: puts/s, envelopes fetched (and acknowledged) per second, fetch-ratio (fetched/s over the first
// size's in this run) and the peak heap growth during the fetch in MiB.
//
// Measured on 2 shared cores: 10,000 envelopes used to drain at ~1,400-3,900/s against ~6,100-9,200/s for 1,000
// (ratio 0.2-0.64). CPU profiles of the drain alone: 71% was Store.ApplyDeletes reading each acknowledged
// record back (from sstables, past Pebble's 8 MiB block cache, which the fetch's own scan keeps flushing) to
// learn its sender and size; with those in the index entry, the index read itself was still ~50%. The snapshot
// is one forward iterator, which the deletes behind it do not slow. The fetch now remembers what it streamed
// (hints.go), so an ack reads nothing: ~19,000-24,000/s for 1,000, ~21,000-23,000/s for 10,000 (ratio
// 0.89-1.10) and ~18,000-19,000/s for 50,000 (0.79-0.83).
func BenchmarkStoreThenFetch(b *testing.B) {
	var sizes []int
	for _, f := range strings.Split(*storeFetchSizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			b.Fatalf("-storefetch.sizes: bad size %q", f)
		}
		sizes = append(sizes, n)
	}
	largest := slices.Max(sizes)
	var baseline float64 // fetched/s of sizes[0], once measured
	for si, n := range sizes {
		b.Run(fmt.Sprintf("envelopes=%d", n), func(b *testing.B) {
			nodes := gridtest.Swarm(b, 3, noLoops(func(cfg *node.Config) {
				cfg.Mailbox.Limits.MaxPerSender = max(largest, 20_000)
				cfg.Mailbox.Limits.MaxCount = max(largest, mailbox.DefaultLimits().MaxCount)
			}))
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
				rate := float64(n) / fetchDur.Seconds()
				b.ReportMetric(rate, "fetched/s")
				if si == 0 {
					baseline = rate
				} else if baseline > 0 {
					b.ReportMetric(rate/baseline, "fetch-ratio")
				}
				b.ReportMetric(float64(peak-base)/(1<<20), "fetch-heap-MiB")
			}
		})
	}
}
