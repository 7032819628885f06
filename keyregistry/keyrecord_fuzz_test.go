package keyregistry

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/iagon/gridchat/e2ee"
)

// sampleKeyRecord returns the encoded key record of a fresh device and the
// device's ID.
func sampleKeyRecord(tb testing.TB) ([]byte, e2ee.DeviceID) {
	tb.Helper()
	dev, err := e2ee.NewDeviceKeys(time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	b, err := newCodec().marshalKey(&KeyRecord{Device: dev.Public(), Key: dev.MessagingKey()})
	if err != nil {
		tb.Fatal(err)
	}
	return b, dev.ID()
}

func TestKeyRecordRoundTripsAndDecodesStrictly(t *testing.T) {
	b, id := sampleKeyRecord(t)
	r, err := DecodeKeyRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	again, err := r.Encode()
	if err != nil || !bytes.Equal(again, b) || r.Device.ID() != id {
		t.Fatalf("round trip: %v", err)
	}
	for name, bad := range map[string][]byte{
		"trailing byte": append(bytes.Clone(b), 0),
		"truncated":     b[:len(b)-1],
		"over the cap":  make([]byte, MaxKeyRecordSize+1),
		"empty":         nil,
	} {
		if _, err := DecodeKeyRecord(bad); !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: got %v", name, err)
		}
	}
	// Another version.
	v2 := bytes.Clone(b)
	if v2[1] != 0x01 || v2[2] != 0x01 { // map(3), key 1, version 1
		t.Fatalf("unexpected encoding prefix %x", v2[:3])
	}
	v2[2] = 0x02
	if _, err := DecodeKeyRecord(v2); !errors.Is(err, ErrMalformed) {
		t.Errorf("version 2: got %v", err)
	}
}

// FuzzDecodeKeyRecord checks the strict key-record decoder and the
// namespace's validator: they never panic, every refusal has a kind, and
// whatever decodes re-encodes to the same bytes.
func FuzzDecodeKeyRecord(f *testing.F) {
	b, id := sampleKeyRecord(f)
	f.Add(b)
	f.Add(b[:len(b)/2])
	c := newCodec()
	v := keyValidator{newVerifier(ValidatorConfig{})}
	key := MessagingKeyKey(id)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := c.unmarshalKey(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error without a kind: %v", err)
			}
			return
		}
		again, err := c.marshalKey(r)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("accepted bytes do not re-encode: %v", err)
		}
		if err := v.Validate(key, b); err != nil && CodeOf(err) == CodeInternal {
			t.Fatalf("validator error without a code: %v", err)
		}
		if _, err := v.Select(key, [][]byte{b, b}); err != nil && CodeOf(err) == CodeInternal {
			t.Fatalf("selector error without a code: %v", err)
		}
	})
}
