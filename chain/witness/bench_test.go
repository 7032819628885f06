package witness

import (
	"context"
	"crypto/ed25519"
	"sync"
	"testing"
	"time"

	"github.com/iagon/gridchat/chain"
)

// BenchmarkWitnessedPublish measures publications per second with receipts
// cosigned by two grid witnesses (quorum 2), from 64 concurrent publishers.
func BenchmarkWitnessedPublish(b *testing.B) {
	nodes := newSwarm(b, 3)
	startLog(b, nodes[0], nodes[1:], 2)
	ctx := context.Background()
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := nodes[0].log.Publish(ctx, record(i)); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "publications/s")
}

// BenchmarkVerifyWitnessedReceipt measures offline verification of a receipt
// with the log signature and two cosignatures (quorum 2) against one bare
// Ed25519 verification interleaved with it.
func BenchmarkVerifyWitnessedReceipt(b *testing.B) {
	nodes := newSwarm(b, 3)
	startLog(b, nodes[0], nodes[1:], 2)
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 255 {
		wg.Go(func() {
			if _, err := nodes[0].log.Publish(ctx, record(i)); err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()
	rc, err := nodes[0].log.Publish(ctx, record(255))
	if err != nil {
		b.Fatal(err)
	}
	raw := rc.Marshal()
	pol := policy(b, 2, nodes[1], nodes[2])
	k := nodes[1].key
	msg := []byte("baseline message of checkpoint length, about one hundred bytes long.............................")
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
		if _, err := pol.Verify(r, record(255)); err != nil {
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
