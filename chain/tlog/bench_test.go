package tlog

import (
	"context"
	"crypto/ed25519"
	"sync"
	"testing"
	"time"

	"github.com/iagon/gridchat/chain"
)

// BenchmarkPublish measures publications per second with receipts, from 64
// concurrent publishers (as a busy node's gateways would be).
func BenchmarkPublish(b *testing.B) {
	l := openTestLog(b, b.TempDir())
	ctx := context.Background()
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := l.Publish(ctx, testRecord(i)); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "publications/s")
}

// BenchmarkVerifyReceipt measures offline receipt verification (parse,
// checkpoint signature, inclusion proof in a tree of 1,000 entries) against
// one bare Ed25519 verification run interleaved with it, so both see the
// same machine load.
func BenchmarkVerifyReceipt(b *testing.B) {
	l := openTestLog(b, b.TempDir())
	ctx := context.Background()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range 999 {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if _, err := l.PublishEntry(ctx, mustEntry(b, testRecord(i))); err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()
	rc, err := l.PublishEntry(ctx, mustEntry(b, testRecord(999)))
	if err != nil {
		b.Fatal(err)
	}
	pol := chain.Policy{LogKey: logKey(l)}
	raw := rc.Marshal()
	rec := testRecord(999)
	k := testKey(5)
	msg := []byte("gridchat.grid/log/test\n1000\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n")
	sig := ed25519.Sign(k, msg)
	pub := k.Public().(ed25519.PublicKey)
	var tReceipt, tBaseline time.Duration
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		r, err := chain.ParseReceipt(raw)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := pol.Verify(r, rec); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if !ed25519.Verify(pub, msg, sig) {
			b.Fatal("bad signature")
		}
		tReceipt += t1.Sub(t0)
		tBaseline += time.Since(t1)
	}
	b.ReportMetric(float64(tReceipt.Nanoseconds())/float64(b.N), "receipt-ns/op")
	b.ReportMetric(float64(tBaseline.Nanoseconds())/float64(b.N), "ed25519-ns/op")
	b.ReportMetric(float64(tReceipt)/float64(tBaseline), "receipt/ed25519")
}

func mustEntry(tb testing.TB, r chain.Record) chain.Entry {
	e, err := chain.NewEntry(r)
	if err != nil {
		tb.Fatal(err)
	}
	return e
}
