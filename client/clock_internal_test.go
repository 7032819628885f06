package client

import (
	"errors"
	"testing"
	"time"

	"github.com/iagon/gridchat/client/store"
	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/wire"
)

func TestHelloOffsetTakesTheGatewayTimeHalfWayThroughTheRoundTrip(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		serverMS int64
		age, rtt time.Duration
		want     time.Duration
		ok       bool
	}{
		{"same clock, instant", now.UnixMilli(), 0, 0, 0, true},
		{"gateway 20 min ahead", now.Add(20 * time.Minute).UnixMilli(), 0, 0, 20 * time.Minute, true},
		{"gateway 20 min behind", now.Add(-20 * time.Minute).UnixMilli(), 0, 0, -20 * time.Minute, true},
		// The gateway read its clock about rtt/2 before the hello arrived: that much later is now on its clock.
		{"round trip of 400 ms", now.UnixMilli(), 0, 400 * time.Millisecond, 200 * time.Millisecond, true},
		// The hello arrived a second before now: its time is a second old.
		{"hello a second old", now.Add(-time.Second).UnixMilli(), time.Second, 0, 0, true},
		{"no time (older gateway)", 0, 0, 0, 0, false},
		{"negative time", -5, 0, 0, 0, false},
	} {
		got, ok := helloOffset(tc.serverMS, now, tc.age, tc.rtt)
		if ok != tc.ok || got != tc.want {
			t.Errorf("%s: offset %v ok %v, want %v %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func TestGridClockRefusesAnOffsetBeyondTheBoundAndKeepsItsOwn(t *testing.T) {
	base := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	g := newGridClock(func() time.Time { return base }, 3*time.Minute)
	hello := func(d time.Duration) *conn {
		return &conn{url: "ws://127.0.0.1:1/v1/ws", hello: wire.Hello{TimeMS: base.Add(d).UnixMilli()}, helloAt: time.Now()}
	}
	if _, err := g.observe(hello(MaxClockOffset + time.Minute)); !errors.Is(err, ErrClockOffset) {
		t.Fatalf("offset beyond MaxClockOffset: %v, want ErrClockOffset", err)
	}
	if _, err := g.observe(hello(-MaxClockOffset - time.Minute)); !errors.Is(err, ErrClockOffset) {
		t.Fatalf("offset beyond -MaxClockOffset: %v, want ErrClockOffset", err)
	}
	if got := g.now(); !got.Equal(base.Add(3 * time.Minute)) {
		t.Fatalf("after refused hellos the clock reads %v, want the old offset kept (%v)", got, base.Add(3*time.Minute))
	}
	if changed, err := g.observe(&conn{hello: wire.Hello{}, helloAt: time.Now()}); err != nil || changed {
		t.Fatalf("hello without time: changed %v, err %v", changed, err)
	}
	changed, err := g.observe(hello(MaxClockOffset - time.Minute))
	if err != nil || !changed {
		t.Fatalf("offset within the bound: changed %v, err %v", changed, err)
	}
	if d := g.now().Sub(base.Add(MaxClockOffset - time.Minute)).Abs(); d > time.Second {
		t.Fatalf("the clock reads %v off the gateway's", d)
	}
	if changed, err := g.observe(hello(MaxClockOffset - time.Minute)); err != nil || changed {
		t.Fatalf("the same offset again: changed %v, err %v", changed, err)
	}
}

func TestStoredClockOffsetRoundTripsAndIgnoresWhatIsOutOfBounds(t *testing.T) {
	for _, off := range []time.Duration{0, 1234 * time.Millisecond, -20 * time.Minute, MaxClockOffset, -MaxClockOffset} {
		if got := parseClockOffset(formatClockOffset(off)); got != off {
			t.Errorf("%v stored reads back as %v", off, got)
		}
	}
	for _, bad := range []string{"", "x", "1.5", "86400001", "-86400001", "99999999999999999999"} {
		if got := parseClockOffset([]byte(bad)); got != 0 {
			t.Errorf("stored %q reads as %v, want 0", bad, got)
		}
	}
}

// A client that starts without a connection signs, and its engine dates and counts messages, at the grid's
// time from the offset it stored; only the account cache ages its entries by the device's own clock.
func TestStoredClockOffsetIsUsedBeforeConnectingForSigningAndMessages(t *testing.T) {
	base := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	key := make([]byte, store.KeySize)
	cfg, err := Config{Dir: t.TempDir(), StoreKey: key, NoSync: true, Now: func() time.Time { return base }}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	dev, err := e2ee.NewDeviceKeys(base)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := e2ee.NewAccount(dev, base)
	if err != nil {
		t.Fatal(err)
	}
	const offset = -20 * time.Minute
	c, err := openState(cfg, func(st *store.Store) error {
		return st.Update(func(b *store.Batch) error {
			b.Put(bucketSelf, keyDevice, dev.Encode())
			b.Put(bucketSelf, keyChain, chain.Encode())
			b.Put(bucketSelf, keyClockOffset, formatClockOffset(offset))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.cfg.Now(); !got.Equal(base.Add(offset)) {
		t.Fatalf("the client signs at %v, want the stored offset applied (%v)", got, base.Add(offset))
	}
	if got := c.eng.cfg.now(); !got.Equal(base.Add(offset)) {
		t.Fatalf("the engine reads %v, want the stored offset applied (%v)", got, base.Add(offset))
	}
	if got := c.accts.now(); !got.Equal(base) {
		t.Fatalf("the account cache reads %v, want the device's clock %v", got, base)
	}
}

// FuzzParseClockOffset: whatever the store holds, the offset read is within MaxClockOffset, and what it reads
// it writes back the same.
func FuzzParseClockOffset(f *testing.F) {
	for _, s := range []string{"0", "1234", "-1200000", "86400000", "-86400000", "86400001", "", "x", "1e3", "+5", "-0", "0x10"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		off := parseClockOffset(b)
		if off > MaxClockOffset || off < -MaxClockOffset {
			t.Fatalf("%q reads as %v, beyond MaxClockOffset", b, off)
		}
		if off%time.Millisecond != 0 {
			t.Fatalf("%q reads as %v, not whole milliseconds", b, off)
		}
		if again := parseClockOffset(formatClockOffset(off)); again != off {
			t.Fatalf("%q reads as %v, which stored reads as %v", b, off, again)
		}
	})
}
