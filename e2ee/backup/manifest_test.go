package backup

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"testing"
	"time"
)

func testManifest(seq uint64) Manifest {
	sum := sha256.Sum256([]byte("archive bytes"))
	return Manifest{
		AccountID:     []byte("account-7f3a"),
		Sequence:      seq,
		ArchiveID:     bytes.Repeat([]byte{0xa1}, archiveIDSize),
		ArchiveSHA256: sum[:],
		Size:          123456,
		Created:       time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC),
	}
}

func testKey(seed string) (ed25519.PublicKey, ed25519.PrivateKey) {
	s := sha256.Sum256([]byte(seed))
	priv := ed25519.NewKeyFromSeed(s[:])
	return priv.Public().(ed25519.PublicKey), priv
}

func TestManifestRoundTripAndRollback(t *testing.T) {
	pub, priv := testKey("device")
	m1, m2 := testManifest(1), testManifest(2)
	s1, err := SignManifest(priv, m1)
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := SignManifest(priv, m2)
	got1, err := VerifyManifest(pub, s1)
	if err != nil {
		t.Fatal(err)
	}
	got2, err := VerifyManifest(pub, s2)
	if err != nil {
		t.Fatal(err)
	}
	if got1.Sequence != 1 || !got1.Created.Equal(m1.Created) || !bytes.Equal(got1.ArchiveSHA256, m1.ArchiveSHA256) ||
		got1.Size != m1.Size || !bytes.Equal(got1.AccountID, m1.AccountID) || !bytes.Equal(got1.ArchiveID, m1.ArchiveID) {
		t.Fatalf("round trip: %+v", got1)
	}
	if err := got2.CheckNewer(got1); err != nil {
		t.Fatalf("newer manifest refused: %v", err)
	}
	if err := got1.CheckNewer(got2); !errors.Is(err, ErrRollback) {
		t.Fatalf("older manifest served as new: error = %v, want ErrRollback", err)
	}
	if err := got1.CheckNewer(got1); !errors.Is(err, ErrRollback) {
		t.Fatalf("same manifest again: error = %v, want ErrRollback", err)
	}
	other := testManifest(3)
	other.AccountID = []byte("account-other")
	if err := other.CheckNewer(got1); !errors.Is(err, ErrOtherAccount) {
		t.Fatalf("other account: error = %v, want ErrOtherAccount", err)
	}
}

func TestManifestSignatureIsBoundToKeyAndContext(t *testing.T) {
	pub, priv := testKey("device")
	otherPub, _ := testKey("other device")
	s, _ := SignManifest(priv, testManifest(1))
	if _, err := VerifyManifest(otherPub, s); !errors.Is(err, ErrManifestSignature) {
		t.Fatalf("other key: error = %v, want ErrManifestSignature", err)
	}
	body := s[:len(s)-ed25519.SignatureSize]
	for _, ctx := range []string{"", "gridchat/v1/backup-manifest2", "gridchat/v1/message"} {
		var sig []byte
		if ctx == "" {
			sig = ed25519.Sign(priv, body)
		} else {
			sig, _ = priv.Sign(nil, body, &ed25519.Options{Context: ctx})
		}
		if _, err := VerifyManifest(pub, append(bytes.Clone(body), sig...)); !errors.Is(err, ErrManifestSignature) {
			t.Fatalf("signature with context %q: error = %v, want ErrManifestSignature", ctx, err)
		}
	}
}

func TestEveryManifestByteFlipIsRefused(t *testing.T) {
	pub, priv := testKey("device")
	s, _ := SignManifest(priv, testManifest(9))
	for i := range s {
		for _, m := range []byte{0x01, 0x80, 0xff} {
			b := bytes.Clone(s)
			b[i] ^= m
			_, err := VerifyManifest(pub, b)
			if !errors.Is(err, ErrManifestFormat) && !errors.Is(err, ErrManifestSignature) {
				t.Fatalf("byte %d mask %#x: error = %v", i, m, err)
			}
		}
	}
	for n := range s {
		if _, err := VerifyManifest(pub, s[:n]); !errors.Is(err, ErrManifestFormat) && !errors.Is(err, ErrManifestSignature) {
			t.Fatalf("truncated to %d: error = %v", n, err)
		}
	}
	if _, err := VerifyManifest(pub, append(bytes.Clone(s), 0)); err == nil {
		t.Fatal("trailing byte accepted")
	}
}
