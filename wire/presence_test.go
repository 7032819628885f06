package wire

import (
	"errors"
	"testing"
	"time"

	"github.com/iagon/gridchat/e2ee"
)

func testDevice(t testing.TB, now time.Time) *e2ee.DeviceKeys {
	t.Helper()
	dk, err := e2ee.NewDeviceKeys(now)
	if err != nil {
		t.Fatal(err)
	}
	return dk
}

func TestPresenceSignOpenRoundTrip(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	dk := testDevice(t, now)
	in := Presence{Gateway: "12D3KooWgateway", Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}, Seq: 7, Expires: now.Add(30 * time.Minute), Online: true}
	rec, err := SignPresence(dk, in, now)
	if err != nil {
		t.Fatal(err)
	}
	p, err := OpenPresence(rec, now.Add(time.Minute), DefaultPresenceTTL)
	if err != nil {
		t.Fatal(err)
	}
	if p.Device != DeviceID(dk.ID()) || p.Gateway != in.Gateway || p.Seq != 7 || !p.Online || len(p.Addrs) != 1 || !p.Expires.Equal(in.Expires) {
		t.Fatalf("opened %+v", p)
	}
}

func TestPresenceRejectsForgeriesAndStaleRecords(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	dk, other := testDevice(t, now), testDevice(t, now)
	good := Presence{Gateway: "gw", Seq: 1, Expires: now.Add(10 * time.Minute), Online: true}
	rec, err := SignPresence(dk, good, now)
	if err != nil {
		t.Fatal(err)
	}
	// Any flipped byte breaks decoding, canonical form or the signature.
	for i := range rec {
		bad := append([]byte(nil), rec...)
		bad[i] ^= 0x01
		if _, err := OpenPresence(bad, now, DefaultPresenceTTL); err == nil {
			t.Fatalf("flipped byte %d accepted", i)
		}
	}
	// Trailing data.
	if _, err := OpenPresence(append(append([]byte(nil), rec...), 0), now, DefaultPresenceTTL); !errors.Is(err, ErrPresenceInvalid) {
		t.Fatalf("trailing byte: %v", err)
	}
	// Expired.
	if _, err := OpenPresence(rec, now.Add(11*time.Minute), DefaultPresenceTTL); !errors.Is(err, ErrPresenceExpired) {
		t.Fatalf("expired: %v", err)
	}
	// An expiry beyond the TTL is refused.
	long, _ := SignPresence(dk, Presence{Gateway: "gw", Expires: now.Add(2 * time.Hour), Online: true}, now)
	if _, err := OpenPresence(long, now, DefaultPresenceTTL); !errors.Is(err, ErrPresenceInvalid) {
		t.Fatalf("long expiry: %v", err)
	}
	// A record whose body carries another device's key does not verify.
	otherRec, _ := SignPresence(other, good, now)
	enc, dec, _ := cborModes()
	var a, b signedPresenceRecord
	_ = dec.Unmarshal(rec, &a)
	_ = dec.Unmarshal(otherRec, &b)
	mixed, _ := enc.Marshal(signedPresenceRecord{Body: b.Body, Request: a.Request})
	if _, err := OpenPresence(mixed, now, DefaultPresenceTTL); !errors.Is(err, ErrPresenceInvalid) {
		t.Fatalf("swapped key: %v", err)
	}
}

func FuzzOpenPresence(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	dk := testDevice(f, now)
	for _, online := range []bool{true, false} {
		rec, err := SignPresence(dk, Presence{Gateway: "gw", Addrs: []string{"/ip4/127.0.0.1/tcp/1"}, Seq: 3, Expires: now.Add(time.Minute), Online: online}, now)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(rec)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := OpenPresence(data, now, DefaultPresenceTTL)
		if err == nil && (p.Gateway == "" || len(p.SigningKey) != 32) {
			t.Fatalf("accepted %+v", p)
		}
	})
}
