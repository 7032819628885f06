package e2ee

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

// t0 is the fixed clock of the tests.
var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// detRand is a deterministic byte stream (SHA-256 in counter mode over a label) for reproducible keys.
type detRand struct {
	label string
	ctr   uint64
	buf   []byte
}

func newDetRand(label string) *detRand { return &detRand{label: label} }

func (d *detRand) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(d.buf) == 0 {
			h := sha256.New()
			h.Write([]byte(d.label))
			var c [8]byte
			binary.BigEndian.PutUint64(c[:], d.ctr)
			d.ctr++
			h.Write(c[:])
			d.buf = h.Sum(nil)
		}
		k := copy(p[n:], d.buf)
		d.buf = d.buf[k:]
		n += k
	}
	return n, nil
}

// testDevice returns a deterministic device named label.
func testDevice(t testing.TB, label string) *DeviceKeys {
	t.Helper()
	dk, err := newDeviceKeys(newDetRand("device/"+label), t0)
	if err != nil {
		t.Fatal(err)
	}
	return dk
}

// typedErrors are the error kinds a refusal may carry.
var typedErrors = []error{
	ErrMalformed, ErrUnsupported, ErrBadSignature, ErrDecrypt, ErrReplay, ErrTooOld, ErrWindow, ErrUnknownSender,
	ErrRevoked, ErrWrongConversation, ErrNotRecipient, ErrUnknownKey, ErrExpired, ErrMismatch, ErrSessionUsed,
}

// isTyped reports whether err carries one of the package's error kinds.
func isTyped(err error) bool {
	var ce *ChainError
	if errors.As(err, &ce) {
		return true
	}
	for _, k := range typedErrors {
		if errors.Is(err, k) {
			return true
		}
	}
	return false
}

// flipEachByte flips every byte of data (with masks 0x01 and 0xff, one at a time) and requires check to
// refuse each variant with a typed error.
func flipEachByte(t *testing.T, what string, data []byte, check func([]byte) error) {
	t.Helper()
	if err := check(data); err != nil {
		t.Fatalf("%s: unmodified input refused: %v", what, err)
	}
	buf := make([]byte, len(data))
	for i := range data {
		for _, mask := range []byte{0x01, 0xff} {
			copy(buf, data)
			buf[i] ^= mask
			err := check(buf)
			if err == nil {
				t.Fatalf("%s: flipping byte %d of %d with %#x accepted", what, i, len(data), mask)
			}
			if !isTyped(err) {
				t.Fatalf("%s: flipping byte %d gave an untyped error: %v", what, i, err)
			}
		}
	}
}

// requireIs fails unless err matches kind.
func requireIs(t *testing.T, err, kind error) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("got error %v, want %v", err, kind)
	}
}
