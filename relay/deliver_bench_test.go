package relay

import (
	"context"
	"testing"

	"github.com/iagon/gridchat/wire"
)

// BenchmarkDeliverStream measures the deliver protocol alone between two hosts on loopback: 1 KiB envelopes,
// pipelined up to the window, acknowledged at once by the receiving side.
func BenchmarkDeliverStream(b *testing.B) {
	h1, h2 := newHost(b), newHost(b)
	var sender, recipient wire.DeviceID
	recipient[0] = 1
	loc := mapLocator{recipient: {Gateway: h2.ID(), Addrs: h2.Addrs()}}
	s1, _ := New(Config{Host: h1, Local: &countingLocal{}, Locator: loc})
	defer s1.Close()
	s2, _ := New(Config{Host: h2, Local: &countingLocal{online: recipient}, Locator: loc})
	defer s2.Close()
	ctx := context.Background()
	req := &wire.SendRequest{MessageID: make([]byte, 16), Ciphertext: make([]byte, 1024), Recipients: [][]byte{recipient[:]}}
	var pend []*Pending
	b.SetBytes(1024)
	for b.Loop() {
		p, err := s1.Dispatch(ctx, sender, req)
		if err != nil {
			b.Fatal(err)
		}
		pend = append(pend, p)
		if len(pend) == 256 {
			if r := pend[0].Wait(ctx); r.Results[0].Status != wire.StatusDelivered {
				b.Fatalf("%+v", r)
			}
			pend = pend[1:]
		}
	}
	for _, p := range pend {
		p.Wait(ctx)
	}
}

// countingLocal acknowledges every envelope for its one online device at once.
type countingLocal struct{ online wire.DeviceID }

func (l *countingLocal) Connected(d wire.DeviceID) bool { return d == l.online }

func (l *countingLocal) Push(env wire.Envelope) <-chan Outcome {
	ch := make(chan Outcome, 1)
	ch <- Outcome{Status: wire.StatusDelivered}
	return ch
}
