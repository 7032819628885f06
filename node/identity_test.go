package node

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
)

func TestIdentityIsCreatedOnceWithMode0600(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	k1, err := LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, IdentityFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %04o, want 0600", st.Mode().Perm())
	}
	if dst, _ := os.Stat(dir); dst.Mode().Perm() != 0o700 {
		t.Errorf("data directory mode %04o, want 0700", dst.Mode().Perm())
	}
	if k1.Type() != crypto.Ed25519 {
		t.Errorf("key type %v, want Ed25519", k1.Type())
	}
	k2, err := LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Equals(k2) {
		t.Error("second load returned a different key")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("data directory holds %d entries, want only the key (no temporary files)", len(entries))
	}
}

func TestIdentityRefusesGroupOrWorldReadableKey(t *testing.T) {
	for _, mode := range []os.FileMode{0o640, 0o604, 0o660} {
		dir := t.TempDir()
		if _, err := LoadOrCreateIdentity(dir); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, IdentityFile)
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadOrCreateIdentity(dir)
		if !errors.Is(err, ErrKeyPermissions) {
			t.Errorf("mode %04o: err = %v, want ErrKeyPermissions", mode, err)
		}
	}
}

func TestIdentityRefusesCorruptOrForeignKey(t *testing.T) {
	ecKey, _, err := crypto.GenerateKeyPair(crypto.ECDSA, 256)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := crypto.MarshalPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	good, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	goodRaw, _ := crypto.MarshalPrivateKey(good)
	cases := map[string][]byte{
		"empty":     nil,
		"garbage":   []byte("not a key"),
		"truncated": goodRaw[:len(goodRaw)-5],
		"ecdsa":     foreign,
		"huge":      bytes.Repeat([]byte{1}, maxIdentityFileSize+10),
	}
	for name, raw := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, IdentityFile)
			if err := os.WriteFile(path, raw, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadOrCreateIdentity(dir)
			if !errors.Is(err, ErrKeyCorrupt) {
				t.Fatalf("err = %v, want ErrKeyCorrupt", err)
			}
			// The bad key is left for the operator, never replaced.
			after, _ := os.ReadFile(path)
			if !bytes.Equal(after, raw) {
				t.Error("the corrupt key file was changed")
			}
		})
	}
}

func FuzzLoadIdentity(f *testing.F) {
	good, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	goodRaw, _ := crypto.MarshalPrivateKey(good)
	f.Add(goodRaw)
	f.Add([]byte{})
	f.Add([]byte{0x08, 0x01, 0x12, 0x40})
	f.Fuzz(func(t *testing.T, raw []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, IdentityFile), raw, 0o600); err != nil {
			t.Fatal(err)
		}
		key, err := LoadOrCreateIdentity(dir)
		if err != nil {
			if !errors.Is(err, ErrKeyCorrupt) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if key.Type() != crypto.Ed25519 {
			t.Fatalf("accepted a %v key", key.Type())
		}
	})
}
