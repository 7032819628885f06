package keyregistry

import (
	"errors"
	"testing"
	"time"

	"github.com/iagon/gridchat/e2ee"
)

// sampleRecords returns encoded records of a real account: genesis alone,
// and with a linked device, a username and a receipt.
func sampleRecords(tb testing.TB) (genesis, full []byte, id e2ee.AccountID) {
	tb.Helper()
	now := time.Now()
	dev, err := e2ee.NewDeviceKeys(now)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := e2ee.NewAccount(dev, now)
	if err != nil {
		tb.Fatal(err)
	}
	cd := newCodec()
	genesis, err = cd.marshal(&Record{Chain: c.Encode()})
	if err != nil {
		tb.Fatal(err)
	}
	nd, err := e2ee.NewDeviceKeys(now)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := c.Append(dev, &e2ee.AddDevice{Cert: e2ee.NewDeviceCert(nd, c.AccountID(), now)}, now); err != nil {
		tb.Fatal(err)
	}
	if _, err := c.Append(nd, &e2ee.SetUsername{Username: "alice"}, now); err != nil {
		tb.Fatal(err)
	}
	full, err = cd.marshal(&Record{Chain: c.Encode(), Receipts: []Receipt{{Seq: 0, Body: []byte("receipt")}}})
	if err != nil {
		tb.Fatal(err)
	}
	return genesis, full, c.AccountID()
}

// FuzzDecodeRecord checks the strict record decoder: it never panics, and
// whatever it accepts re-encodes to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	g, full, _ := sampleRecords(f)
	f.Add(g)
	f.Add(full)
	c := newCodec()
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := c.unmarshal(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error without a kind: %v", err)
			}
			return
		}
		again, err := c.marshal(r)
		if err != nil || string(again) != string(b) {
			t.Fatalf("accepted a non-canonical record")
		}
	})
}

// sampleRelease returns the encoded record of an account that claimed
// "alice" and renamed to "alice.two": its release of "alice".
func sampleRelease(tb testing.TB) []byte {
	tb.Helper()
	now := time.Now()
	dev, err := e2ee.NewDeviceKeys(now)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := e2ee.NewAccount(dev, now)
	if err != nil {
		tb.Fatal(err)
	}
	for _, n := range []string{"alice", "alice.two"} {
		if _, err := c.Append(dev, &e2ee.SetUsername{Username: n}, now); err != nil {
			tb.Fatal(err)
		}
	}
	b, err := newCodec().marshal(&Record{Chain: c.Encode()})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// FuzzValidateRecord runs every namespace's validator and selector on
// arbitrary values: no panics, every refusal has a directory kind, and
// anything accepted replays.
func FuzzValidateRecord(f *testing.F) {
	g, full, id := sampleRecords(f)
	f.Add(g, uint8(0))
	f.Add(full, uint8(1))
	f.Add(full, uint8(2))
	f.Add(sampleRelease(f), uint8(1))
	vals := Validators(ValidatorConfig{})
	keys := []string{AccountKey(id), UsernameKey("alice"), DeviceKey(e2ee.DeviceID{1})}
	nss := []string{NSAccount, NSUsername, NSDevice}
	f.Fuzz(func(t *testing.T, b []byte, which uint8) {
		i := int(which) % len(keys)
		v := vals[nss[i]]
		err := v.Validate(keys[i], b)
		if err != nil && CodeOf(err) == CodeInternal {
			t.Fatalf("refusal without a code: %v", err)
		}
		if _, err := v.Select(keys[i], [][]byte{b, full}); err != nil && CodeOf(err) == CodeInternal {
			t.Fatalf("select failure without a code: %v", err)
		}
		if err == nil {
			if _, err := newVerifier(ValidatorConfig{}).open(b); err != nil {
				t.Fatalf("validator accepted a record that does not open: %v", err)
			}
		}
	})
}
