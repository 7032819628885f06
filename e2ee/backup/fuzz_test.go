package backup

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"testing"
)

func FuzzReadHeader(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ReadHeader(bytes.NewReader(b))
		if err != nil {
			if !isTyped(err) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if len(h.raw) > MaxHeaderSize || h.chunkSize < MinChunkSize || h.chunkSize > MaxChunkSize {
			t.Fatalf("accepted out-of-range header")
		}
		if err := h.Params().check(); err != nil {
			t.Fatalf("accepted params %+v: %v", h.Params(), err)
		}
	})
}

// FuzzReadChunks decrypts fuzzed chunk streams after the committed vector
// archive's header, with its key.
func FuzzReadChunks(f *testing.F) {
	b, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		f.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(b, &v); err != nil {
		f.Fatal(err)
	}
	a, _ := hex.DecodeString(v.Archive)
	h, err := ReadHeader(bytes.NewReader(a))
	if err != nil {
		f.Fatal(err)
	}
	rk, err := ParseRecoveryKey(v.RecoveryKey)
	if err != nil {
		f.Fatal(err)
	}
	k, err := h.UnlockRecovery(rk)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, chunks []byte) {
		r, err := OpenPayload(h, k, bytes.NewReader(chunks))
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.ReadAll(r)
		if err != nil && !isTyped(err) {
			t.Fatalf("untyped error %v", err)
		}
		if err == nil && !bytes.Equal(chunks, a[len(h.raw):]) {
			t.Fatal("accepted chunks other than the archive's own")
		}
	})
}

func FuzzVerifyManifest(f *testing.F) {
	pub, _ := testKey("device")
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := VerifyManifest(pub, b)
		if err != nil && !errors.Is(err, ErrManifestFormat) && !errors.Is(err, ErrManifestSignature) {
			t.Fatalf("untyped error %v", err)
		}
	})
}

func FuzzParseRecoveryKey(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		rk, err := ParseRecoveryKey(s)
		if err != nil {
			if !errors.Is(err, ErrBadRecoveryKey) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		again, err := ParseRecoveryKey(rk.String())
		if err != nil || again.key != rk.key {
			t.Fatalf("canonical form does not round-trip: %v", err)
		}
	})
}
