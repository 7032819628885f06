package client

import (
	"context"
	"testing"
	"time"

	"github.com/iagon/gridchat/e2ee"
)

// BenchmarkMessageRoundTrip measures one text message through the client's state machine (number, seal,
// envelope, durable store batch on both sides, open, numbering check) between two devices without a network,
// beside its baseline in the same run: the bare e2ee Seal and Open of the same payload size.
func BenchmarkMessageRoundTrip(b *testing.B) {
	const text = "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
	b.Run("baseline=e2ee-seal-open", func(b *testing.B) {
		now := time.Now()
		a, _ := e2ee.NewDeviceKeys(now)
		r, _ := e2ee.NewDeviceKeys(now)
		conv, _ := e2ee.NewConversationID()
		s, _ := e2ee.NewSession(conv, 1)
		rk, _ := e2ee.NewRecipientKey(r.Public(), r.MessagingKey(), now)
		kd, err := e2ee.Distribute(a, s, []e2ee.RecipientKey{rk})
		if err != nil {
			b.Fatal(err)
		}
		snd, _ := s.Sender(a)
		rs, _ := e2ee.Open(kd, a.Public(), r)
		rcv, _ := rs.Receiver(a.Public(), e2ee.ReceiverOptions{})
		pt := []byte(text)
		b.ResetTimer()
		for b.Loop() {
			m, err := snd.Seal(pt)
			if err != nil {
				b.Fatal(err)
			}
			m2, err := e2ee.DecodeMessage(m.Encode())
			if err != nil {
				b.Fatal(err)
			}
			if _, err := rcv.Open(m2); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("client", func(b *testing.B) {
		net := newMemNet()
		a, _ := newBenchAccount(b, net, "alice")
		r, _ := newBenchAccount(b, net, "bob")
		conv := DirectConversationID(a.eng.self, r.eng.self)
		if err := a.eng.ensureConv(conv, &convRecord{Kind: Direct, Peer: r.eng.self[:]}); err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		b.ResetTimer()
		for b.Loop() {
			if _, err := a.eng.send(ctx, conv, &payload{Type: PayloadText, Text: text}, sendOpts{}); err != nil {
				b.Fatal(err)
			}
			net.mu.Lock()
			q := net.inbox[r.keys.ID()]
			delete(net.inbox, r.keys.ID())
			net.mu.Unlock()
			for _, e := range q {
				if err := r.eng.receive(ctx, e.id, e.from, e.ct); err != nil {
					b.Fatal(err)
				}
			}
			a.eng.ev.take()
			r.eng.ev.take()
		}
	})
}
