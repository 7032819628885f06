package relay

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/wire"
)

func signedPresence(t *testing.T, dk *e2ee.DeviceKeys, gw peer.ID, seq uint64, online bool, now time.Time) []byte {
	t.Helper()
	rec, err := wire.SignPresence(dk, wire.Presence{Gateway: gw.String(), Addrs: []string{"/ip4/127.0.0.1/tcp/4001"},
		Seq: seq, Expires: now.Add(10 * time.Minute), Online: online}, now)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestPresenceValidatorChecksKeySignatureAndExpiry(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := now
	v := PresenceValidator{Now: func() time.Time { return clock }}
	dk, _ := e2ee.NewDeviceKeys(now)
	other, _ := e2ee.NewDeviceKeys(now)
	gw := newHost(t).ID()
	key := PresenceKey(wire.DeviceID(dk.ID()))
	r1 := signedPresence(t, dk, gw, 1, true, now)
	r2 := signedPresence(t, dk, gw, 2, false, now)
	if err := v.Validate(key, r1); err != nil {
		t.Fatal(err)
	}
	if err := v.Validate(PresenceKey(wire.DeviceID(other.ID())), r1); err == nil {
		t.Fatal("record accepted under another device's key")
	}
	if err := v.Validate("/gcpres/"+"ABCD", r1); err == nil {
		t.Fatal("malformed key accepted")
	}
	bad := append([]byte(nil), r1...)
	bad[len(bad)-5] ^= 1
	if err := v.Validate(key, bad); err == nil {
		t.Fatal("tampered record accepted")
	}
	if i, err := v.Select(key, [][]byte{r1, bad, r2}); err != nil || i != 2 {
		t.Fatalf("select: %d %v", i, err)
	}
	clock = now.Add(11 * time.Minute)
	if err := v.Validate(key, r1); !errors.Is(err, wire.ErrPresenceExpired) {
		t.Fatalf("expired record: %v", err)
	}
	if _, err := v.Select(key, [][]byte{r1, r2}); err == nil {
		t.Fatal("selected an expired record")
	}
}

func TestPresenceLocateFollowsHighestSequence(t *testing.T) {
	now := time.Now()
	p := newPresence(t, PresenceConfig{CacheSize: 2})
	dk, _ := e2ee.NewDeviceKeys(now)
	gw := newHost(t).ID()
	d := wire.DeviceID(dk.ID())
	ctx := context.Background()
	if _, err := p.Locate(ctx, d); !errors.Is(err, ErrNotOnline) {
		t.Fatalf("unknown device: %v", err)
	}
	if err := p.Publish(ctx, signedPresence(t, dk, gw, 5, true, now)); err != nil {
		t.Fatal(err)
	}
	loc, err := p.Locate(ctx, d)
	if err != nil || loc.Gateway != gw || len(loc.Addrs) != 1 {
		t.Fatalf("%+v %v", loc, err)
	}
	// An older record does not override; a newer offline one withdraws.
	_ = p.Publish(ctx, signedPresence(t, dk, gw, 4, false, now))
	if _, err := p.Locate(ctx, d); err != nil {
		t.Fatalf("older record overrode: %v", err)
	}
	_ = p.Publish(ctx, signedPresence(t, dk, gw, 6, false, now))
	if _, err := p.Locate(ctx, d); !errors.Is(err, ErrNotOnline) {
		t.Fatalf("withdrawn device: %v", err)
	}
	// The cache stays within its bound.
	for range 5 {
		o, _ := e2ee.NewDeviceKeys(now)
		_ = p.Publish(ctx, signedPresence(t, o, gw, 1, true, now))
	}
	p.mu.Lock()
	n := len(p.cache)
	p.mu.Unlock()
	if n > 2 {
		t.Fatalf("cache holds %d entries, bound 2", n)
	}
	if err := p.Publish(ctx, []byte("junk")); err == nil {
		t.Fatal("junk published")
	}
}
