package cpace

import (
	"bytes"
	"errors"
	"testing"

	"github.com/gtank/ristretto255"
)

// FuzzScalarMultVfy decodes arbitrary peer shares: each either yields a
// non-identity canonical point or ErrInvalidShare.
func FuzzScalarMultVfy(f *testing.F) {
	one := make([]byte, 32)
	one[0] = 1
	y, err := ristretto255.NewScalar().SetCanonicalBytes(one)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, share []byte) {
		k, err := ScalarMultVfy(y, share)
		if err != nil {
			if !errors.Is(err, ErrInvalidShare) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		// With y = 1 the result is the canonical re-encoding of the share.
		if !bytes.Equal(k, share) {
			t.Fatalf("accepted non-canonical share %x", share)
		}
	})
}
