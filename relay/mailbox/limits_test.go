package mailbox

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestStoreMaxTombstonesBoundsTombstones: expiries past MaxTombstones leave no tombstone; the envelopes still go.
func TestStoreMaxTombstonesBoundsTombstones(t *testing.T) {
	ctx := context.Background()
	lim := Limits{MaxCount: 2, MaxTombstones: 3}
	s := newTestStore(t, lim)
	to, from := randDevice(t), randDevice(t)
	const n = 10
	for i := range n {
		if _, err := s.Put(ctx, env(to, from, i, t0.Add(time.Duration(i)*time.Second)), t0.Add(time.Minute)); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	if c, _ := s.Count(ctx, to); c != lim.MaxCount {
		t.Fatalf("%d envelopes kept, want MaxCount %d", c, lim.MaxCount)
	}
	ts, err := s.Tombstones(ctx, to)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != lim.MaxTombstones {
		t.Fatalf("%d tombstones after %d expiries, want MaxTombstones %d", len(ts), n-lim.MaxCount, lim.MaxTombstones)
	}
}

// TestStoreMaxClockSkewBoundsFutureStamps: an envelope stamped up to MaxClockSkew ahead of the replica's clock is
// kept; one stamped further ahead is refused as malformed.
func TestStoreMaxClockSkewBoundsFutureStamps(t *testing.T) {
	ctx := context.Background()
	lim := Limits{MaxClockSkew: time.Minute}
	s := newTestStore(t, lim)
	to, from := randDevice(t), randDevice(t)
	if _, err := s.Put(ctx, env(to, from, 1, t0.Add(lim.MaxClockSkew-time.Second)), t0); err != nil {
		t.Fatalf("stamp within the skew: %v", err)
	}
	if _, err := s.Put(ctx, env(to, from, 2, t0.Add(lim.MaxClockSkew+time.Second)), t0); !errors.Is(err, ErrMalformed) {
		t.Fatalf("stamp beyond the skew: %v, want malformed", err)
	}
	if c, _ := s.Count(ctx, to); c != 1 {
		t.Fatalf("%d envelopes kept, want 1", c)
	}
}
