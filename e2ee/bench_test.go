package e2ee

import (
	"crypto/ed25519"
	"fmt"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

const benchPayload = 1024

// BenchmarkBaselineSealSign is the baseline: one bare ChaCha20-Poly1305 seal of 1 KiB and one Ed25519 signature
// over the ciphertext.
func BenchmarkBaselineSealSign(b *testing.B) {
	key := make([]byte, 32)
	nonce := make([]byte, 12)
	priv := ed25519.NewKeyFromSeed(make([]byte, 32))
	pt := make([]byte, benchPayload)
	aead, err := chacha20poly1305.New(key)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchPayload)
	for b.Loop() {
		ct := aead.Seal(nil, nonce, pt, nil)
		_ = ed25519.Sign(priv, ct)
	}
}

// BenchmarkBaselineVerifyOpen is the matching receive-side baseline: one Ed25519 verification and one bare
// ChaCha20-Poly1305 open of 1 KiB.
func BenchmarkBaselineVerifyOpen(b *testing.B) {
	key := make([]byte, 32)
	nonce := make([]byte, 12)
	priv := ed25519.NewKeyFromSeed(make([]byte, 32))
	pub := priv.Public().(ed25519.PublicKey)
	aead, err := chacha20poly1305.New(key)
	if err != nil {
		b.Fatal(err)
	}
	ct := aead.Seal(nil, nonce, make([]byte, benchPayload), nil)
	sig := ed25519.Sign(priv, ct)
	b.SetBytes(benchPayload)
	for b.Loop() {
		if !ed25519.Verify(pub, ct, sig) {
			b.Fatal("verify")
		}
		if _, err := aead.Open(nil, nonce, ct, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMessageSeal measures Sender.Seal of a 1 KiB payload: chain step, AEAD seal, encoding, Ed25519ctx
// signature.
func BenchmarkMessageSeal(b *testing.B) {
	p := newParty(b)
	snd, _ := pair(b, p, convA, 1, ReceiverOptions{})
	pt := make([]byte, benchPayload)
	b.SetBytes(benchPayload)
	for b.Loop() {
		if _, err := snd.Seal(pt); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMessageOpen measures Receiver.Open of a 1 KiB message delivered in order: signature check, chain
// step, AEAD open.
func BenchmarkMessageOpen(b *testing.B) {
	p := newParty(b)
	snd, rcv := pair(b, p, convA, 1, ReceiverOptions{})
	pt := make([]byte, benchPayload)
	const batch = 4096
	msgs := make([]*Message, batch)
	refill := func() {
		for i := range msgs {
			m, err := snd.Seal(pt)
			if err != nil {
				b.Fatal(err)
			}
			msgs[i] = m
		}
	}
	refill()
	b.SetBytes(benchPayload)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i > 0 && i%batch == 0 {
			b.StopTimer()
			refill()
			b.StartTimer()
		}
		if _, err := rcv.Open(msgs[i%batch]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDistribute measures sealing a session key to n devices and signing the distribution.
func BenchmarkDistribute(b *testing.B) {
	sender := testDevice(b, "sender")
	for _, n := range []int{2, 10, 100} {
		rks := make([]RecipientKey, n)
		for i := range rks {
			rks[i] = recipientOf(b, testDevice(b, fmt.Sprintf("r%d", i)))
		}
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			for b.Loop() {
				s, err := NewSession(convA, 1)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := Distribute(sender, s, rks); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkOpenKeyDistribution measures one recipient opening a distribution to n devices.
func BenchmarkOpenKeyDistribution(b *testing.B) {
	sender := testDevice(b, "sender")
	for _, n := range []int{2, 10, 100} {
		devs := make([]*DeviceKeys, n)
		rks := make([]RecipientKey, n)
		for i := range rks {
			devs[i] = testDevice(b, fmt.Sprintf("r%d", i))
			rks[i] = recipientOf(b, devs[i])
		}
		s, err := NewSession(convA, 1)
		if err != nil {
			b.Fatal(err)
		}
		kd, err := Distribute(sender, s, rks)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := Open(kd, sender.Public(), devs[n-1]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPairedRatio interleaves each e2ee operation with its baseline at every iteration, so that load
// from other processes hits both alike, and reports our time over the baseline's as "x-baseline":
//   - seal: Sender.Seal of 1 KiB vs one bare ChaCha20-Poly1305 seal + one Ed25519 sign;
//   - open: Receiver.Open of 1 KiB vs the same seal+sign baseline (the yardstick);
//   - open-vs-verify: Receiver.Open vs one bare Ed25519 verify + one ChaCha20-Poly1305 open.
func BenchmarkPairedRatio(b *testing.B) {
	key, nonce := make([]byte, 32), make([]byte, 12)
	priv := ed25519.NewKeyFromSeed(make([]byte, 32))
	pub := priv.Public().(ed25519.PublicKey)
	aead, err := chacha20poly1305.New(key)
	if err != nil {
		b.Fatal(err)
	}
	pt := make([]byte, benchPayload)
	sealSign := func() {
		ct := aead.Seal(nil, nonce, pt, nil)
		_ = ed25519.Sign(priv, ct)
	}
	bct := aead.Seal(nil, nonce, pt, nil)
	bsig := ed25519.Sign(priv, bct)
	verifyOpen := func() {
		if !ed25519.Verify(pub, bct, bsig) {
			b.Fatal("verify")
		}
		if _, err := aead.Open(nil, nonce, bct, nil); err != nil {
			b.Fatal(err)
		}
	}
	p := newParty(b)
	run := func(b *testing.B, ours func(i int), base func()) {
		var tOurs, tBase time.Duration
		for i := 0; i < b.N; i++ {
			s := time.Now()
			base()
			m := time.Now()
			ours(i)
			tBase += m.Sub(s)
			tOurs += time.Since(m)
		}
		b.ReportMetric(float64(tOurs)/float64(tBase), "x-baseline")
		b.ReportMetric(float64(tOurs.Nanoseconds())/float64(b.N), "ns-ours/op")
		b.ReportMetric(float64(tBase.Nanoseconds())/float64(b.N), "ns-base/op")
	}
	b.Run("seal", func(b *testing.B) {
		snd, _ := pair(b, p, convA, 1, ReceiverOptions{})
		run(b, func(int) {
			if _, err := snd.Seal(pt); err != nil {
				b.Fatal(err)
			}
		}, sealSign)
	})
	openRun := func(b *testing.B, base func()) {
		snd, rcv := pair(b, p, convA, 1, ReceiverOptions{})
		msgs := make([]*Message, b.N)
		for i := range msgs {
			if msgs[i], err = snd.Seal(pt); err != nil {
				b.Fatal(err)
			}
		}
		b.ResetTimer()
		run(b, func(i int) {
			if _, err := rcv.Open(msgs[i]); err != nil {
				b.Fatal(err)
			}
		}, base)
	}
	b.Run("open", func(b *testing.B) { openRun(b, sealSign) })
	b.Run("open-vs-verify", func(b *testing.B) { openRun(b, verifyOpen) })
}
