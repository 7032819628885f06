package relay

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/wire"
)

// BenchmarkPresenceLocations measures a cached lookup of a device connected to one gateway (the baseline: the
// only case before presence kept several) and to two and eight.
func BenchmarkPresenceLocations(b *testing.B) {
	now := time.Now()
	var gws []peer.ID
	for range 8 {
		gws = append(gws, newHost(b).ID())
	}
	for _, n := range []int{1, 2, 8} {
		b.Run(fmt.Sprintf("gateways=%d", n), func(b *testing.B) {
			p, err := NewPresence(PresenceConfig{})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			dk, _ := e2ee.NewDeviceKeys(now)
			for i := range n {
				rec, err := wire.SignPresence(dk, wire.Presence{Gateway: gws[i].String(),
					Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}, Seq: uint64(i + 1), Expires: now.Add(time.Hour),
					Online: true}, now)
				if err != nil {
					b.Fatal(err)
				}
				if err := p.Publish(context.Background(), rec); err != nil {
					b.Fatal(err)
				}
			}
			d := wire.DeviceID(dk.ID())
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if locs, err := p.Locations(ctx, d); err != nil || len(locs) != n {
					b.Fatal(locs, err)
				}
			}
		})
	}
}
