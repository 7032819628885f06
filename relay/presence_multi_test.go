package relay

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/wire"
)

// gateways returns the gateways of locs in order, and which are superseded.
func gateways(locs []Location) ([]peer.ID, []bool) {
	var ids []peer.ID
	var sup []bool
	for _, l := range locs {
		ids = append(ids, l.Gateway)
		sup = append(sup, l.Superseded)
	}
	return ids, sup
}

// newPresence returns a Presence made with cfg that is closed when the test ends.
func newPresence(t *testing.T, cfg PresenceConfig) *Presence {
	t.Helper()
	p, err := NewPresence(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func wantLocations(t *testing.T, p *Presence, d wire.DeviceID, want []peer.ID, superseded []bool) {
	t.Helper()
	locs, err := p.Locations(context.Background(), d)
	if len(want) == 0 {
		if !errors.Is(err, ErrNotOnline) {
			t.Fatalf("device should be offline: %v %v", locs, err)
		}
		return
	}
	if err != nil {
		t.Fatalf("want %v: %v", want, err)
	}
	got, sup := gateways(locs)
	if !slices.Equal(got, want) || !slices.Equal(sup, superseded) {
		t.Fatalf("gateways %v superseded %v, want %v %v", got, sup, want, superseded)
	}
}

// TestPresenceOfflineRecordWithdrawsOnlyItsGateway: a device connected to two gateways stays located on the
// first when the second's offline record arrives, and only the records themselves can take a gateway away:
// replays of older records, in any order, bring neither gateway back.
func TestPresenceOfflineRecordWithdrawsOnlyItsGateway(t *testing.T) {
	now := time.Now()
	p := newPresence(t, PresenceConfig{})
	dk, _ := e2ee.NewDeviceKeys(now)
	d := wire.DeviceID(dk.ID())
	g1, g2 := newHost(t).ID(), newHost(t).ID()
	ctx := context.Background()
	on1, off1 := signedPresence(t, dk, g1, 5, true, now), signedPresence(t, dk, g1, 6, false, now)
	on2, off2 := signedPresence(t, dk, g2, 7, true, now), signedPresence(t, dk, g2, 8, false, now)

	for _, r := range [][]byte{on1, on2} {
		if err := p.Publish(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	wantLocations(t, p, d, []peer.ID{g2, g1}, []bool{false, true})
	if loc, err := p.Locate(ctx, d); err != nil || loc.Gateway != g2 {
		t.Fatalf("Locate: %v %v, want the newest gateway", loc.Gateway, err)
	}
	_ = p.Publish(ctx, off2)
	wantLocations(t, p, d, []peer.ID{g1}, []bool{true})
	_ = p.Publish(ctx, on2) // a replay of the withdrawn gateway's online record
	wantLocations(t, p, d, []peer.ID{g1}, []bool{true})
	_ = p.Publish(ctx, off1)
	wantLocations(t, p, d, nil, nil)
	for _, r := range [][]byte{on1, on2, on1} {
		_ = p.Publish(ctx, r)
	}
	wantLocations(t, p, d, nil, nil)
}

// TestPresenceRefusesRecordsNamingAGatewayTheDeviceDidNotSign: a node cannot make a device look connected to
// a gateway it never connected to: a record whose gateway was rewritten, or signed by another key, is refused
// by Publish, by the gossip and DHT validators, and never shows in a lookup.
func TestPresenceRefusesRecordsNamingAGatewayTheDeviceDidNotSign(t *testing.T) {
	now := time.Now()
	p := newPresence(t, PresenceConfig{})
	dk, _ := e2ee.NewDeviceKeys(now)
	mallory, _ := e2ee.NewDeviceKeys(now)
	d := wire.DeviceID(dk.ID())
	g1, evil := newHost(t).ID(), newHost(t).ID()
	ctx := context.Background()
	if err := p.Publish(ctx, signedPresence(t, dk, g1, 5, true, now)); err != nil {
		t.Fatal(err)
	}

	// The device's genuine record with its gateway rewritten, signature kept.
	rewritten := rewriteGateway(t, signedPresence(t, dk, g1, 9, true, now), evil.String())
	// Mallory's own record, with the device's key put in its body: the signature is Mallory's.
	impostor := rewriteKey(t, signedPresence(t, mallory, evil, 9, true, now), dk.Public().Signing)
	v := PresenceValidator{}
	for name, rec := range map[string][]byte{"rewritten gateway": rewritten, "impostor": impostor} {
		if err := p.Publish(ctx, rec); err == nil {
			t.Fatalf("%s: published", name)
		}
		if err := v.Validate(PresenceKey(d), rec); err == nil {
			t.Fatalf("%s: DHT validator accepted it", name)
		}
		if _, err := p.val.open(rec); err == nil {
			t.Fatalf("%s: gossip validator accepted it", name)
		}
	}
	// Mallory's valid record is Mallory's: it does not go under the device's key.
	if err := v.Validate(PresenceKey(d), signedPresence(t, mallory, evil, 9, true, now)); err == nil {
		t.Fatal("another device's record accepted under the device's key")
	}
	wantLocations(t, p, d, []peer.ID{g1}, []bool{false})
}

// rewriteGateway re-encodes a signed record with another gateway in its body, keeping the signature.
func rewriteGateway(t *testing.T, rec []byte, gw string) []byte {
	t.Helper()
	return rewriteBody(t, rec, func(b map[int]any) { b[3] = gw })
}

// rewriteKey re-encodes a signed record with another signing key in its body, keeping the signature.
func rewriteKey(t *testing.T, rec []byte, key []byte) []byte {
	t.Helper()
	return rewriteBody(t, rec, func(b map[int]any) { b[2] = key })
}

func rewriteBody(t *testing.T, rec []byte, f func(map[int]any)) []byte {
	t.Helper()
	enc, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		t.Fatal(err)
	}
	var outer map[int][]byte
	if err := cbor.Unmarshal(rec, &outer); err != nil {
		t.Fatal(err)
	}
	var body map[int]any
	if err := cbor.Unmarshal(outer[1], &body); err != nil {
		t.Fatal(err)
	}
	f(body)
	if outer[1], err = enc.Marshal(body); err != nil {
		t.Fatal(err)
	}
	out, err := enc.Marshal(outer)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPresenceGatewaysExpireAndStayBounded: each gateway's record lapses at its own expiry, and the cache keeps
// at most MaxGateways gateways per device, dropping the oldest record for a newer one.
func TestPresenceGatewaysExpireAndStayBounded(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := now
	p := newPresence(t, PresenceConfig{MaxGateways: 2, Now: func() time.Time { return clock }})
	dk, _ := e2ee.NewDeviceKeys(now)
	d := wire.DeviceID(dk.ID())
	g1, g2, g3 := newHost(t).ID(), newHost(t).ID(), newHost(t).ID()
	ctx := context.Background()
	short := func(gw peer.ID, seq uint64, ttl time.Duration) []byte {
		rec, err := wire.SignPresence(dk, wire.Presence{Gateway: gw.String(), Seq: seq, Expires: now.Add(ttl),
			Online: true}, now)
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	_ = p.Publish(ctx, short(g1, 1, 10*time.Minute))
	_ = p.Publish(ctx, short(g2, 2, 5*time.Minute))
	wantLocations(t, p, d, []peer.ID{g2, g1}, []bool{false, true})
	clock = now.Add(6 * time.Minute)
	// g2's record lapsed: g1's is now the device's newest current record.
	wantLocations(t, p, d, []peer.ID{g1}, []bool{false})
	clock = now
	_ = p.Publish(ctx, short(g3, 3, 10*time.Minute)) // the cache is full: g1 (lowest sequence) goes
	wantLocations(t, p, d, []peer.ID{g3, g2}, []bool{false, true})
	_ = p.Publish(ctx, short(g1, 1, 10*time.Minute)) // older than every kept record: refused
	wantLocations(t, p, d, []peer.ID{g3, g2}, []bool{false, true})
	if n := counterValue(t, p.rejected.WithLabelValues("gateways_full")); n != 1 {
		t.Fatalf("refusals for want of room counted %v", n)
	}
	clock = now.Add(11 * time.Minute)
	wantLocations(t, p, d, nil, nil)
}

// FuzzPresenceMergeIsOrderIndependent checks the cache against a model: whatever order a device's records
// arrive in (gossip does not keep order), each gateway ends with its highest-sequence record, the live ones
// are listed newest first, and all but the device's newest record are superseded.
func FuzzPresenceMergeIsOrderIndependent(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3}, uint64(1))
	f.Add([]byte{0x10, 0x21, 0x32, 0x03, 0x14}, uint64(7))
	f.Add([]byte{0xff, 0x00, 0x7f, 0x80, 0x41, 0x42}, uint64(42))
	now := time.Now()
	dk, err := e2ee.NewDeviceKeys(now)
	if err != nil {
		f.Fatal(err)
	}
	gws := make([]peer.ID, 3)
	for i := range gws {
		gws[i] = newHost(f).ID()
	}
	signed := make(map[[3]uint64][]byte)
	sign := func(t *testing.T, gw, seq uint64, online bool) []byte {
		k := [3]uint64{gw, seq, 0}
		if online {
			k[2] = 1
		}
		if rec, ok := signed[k]; ok {
			return rec
		}
		rec := signedPresence(t, dk, gws[gw], seq, online, now)
		signed[k] = rec
		return rec
	}
	f.Fuzz(func(t *testing.T, ops []byte, shuffle uint64) {
		if len(ops) > 12 {
			ops = ops[:12]
		}
		var recs []fuzzRec
		for _, op := range ops {
			r := fuzzRec{gw: uint64(op&0x3) % 3, seq: uint64(op>>3) + 1, online: op&0x4 != 0}
			r.raw = sign(t, r.gw, r.seq, r.online)
			recs = append(recs, r)
		}
		// The model: per gateway, the record of the highest sequence, offline first among equals.
		best := map[uint64]fuzzRec{}
		for _, r := range recs {
			if b, ok := best[r.gw]; !ok || r.seq > b.seq || r.seq == b.seq && b.online && !r.online {
				best[r.gw] = r
			}
		}
		var newest uint64
		for _, b := range best {
			newest = max(newest, b.seq)
		}
		d := wire.DeviceID(dk.ID())
		rng := rand.New(rand.NewPCG(shuffle, 1))
		var first []Location
		for round := range 3 {
			p, err := NewPresence(PresenceConfig{})
			if err != nil {
				t.Fatal(err)
			}
			order := slices.Clone(recs)
			if round > 0 {
				rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			}
			for _, r := range order {
				if err := p.Publish(context.Background(), r.raw); err != nil {
					t.Fatal(err)
				}
			}
			locs, err := p.Locations(context.Background(), d)
			_ = p.Close()
			var live []fuzzRec
			for _, b := range best {
				if b.online {
					live = append(live, b)
				}
			}
			if len(live) == 0 {
				if !errors.Is(err, ErrNotOnline) || len(locs) != 0 {
					t.Fatalf("round %d: no gateway online, got %v %v", round, locs, err)
				}
				continue
			}
			if err != nil || len(locs) != len(live) {
				t.Fatalf("round %d: %d live gateways, got %v %v", round, len(live), locs, err)
			}
			for i := 1; i < len(locs); i++ {
				if seqOf(t, best, gws, locs[i-1].Gateway) < seqOf(t, best, gws, locs[i].Gateway) {
					t.Fatalf("round %d: not newest first: %v", round, locs)
				}
			}
			for _, l := range locs {
				if l.Superseded != (seqOf(t, best, gws, l.Gateway) < newest) {
					t.Fatalf("round %d: %s superseded=%v with newest %d", round, l.Gateway, l.Superseded, newest)
				}
			}
			if round == 0 {
				first = locs
			} else if a, b := fmt.Sprint(gateways(first)), fmt.Sprint(gateways(locs)); a != b {
				t.Fatalf("order of arrival changed the answer: %s then %s", a, b)
			}
		}
	})
}

// fuzzRec is one record of FuzzPresenceMergeIsOrderIndependent.
type fuzzRec struct {
	gw, seq uint64
	online  bool
	raw     []byte
}

// seqOf returns the model's sequence of the gateway id.
func seqOf(t *testing.T, best map[uint64]fuzzRec, gws []peer.ID, id peer.ID) uint64 {
	t.Helper()
	i := slices.Index(gws, id)
	if i < 0 {
		t.Fatalf("unknown gateway %s", id)
	}
	return best[uint64(i)].seq
}
