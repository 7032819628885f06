package store

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func newKey(t testing.TB) []byte {
	k := make([]byte, KeySize)
	rand.Read(k)
	return k
}

func TestStoreSurvivesReopen(t *testing.T) {
	dir, key := t.TempDir(), newKey(t)
	s, err := Open(dir, key, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put("contacts", "bob", []byte("account-of-bob")); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(b *Batch) error {
		b.Put("msgs", "1", []byte("one"))
		b.Put("msgs", "2", []byte("two"))
		b.Delete("contacts", "nobody")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("msgs", "1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.Put("a", "b", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put after Close: %v, want ErrClosed", err)
	}

	s, err = Open(dir, key, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, ok := s.Get("contacts", "bob"); !ok || string(v) != "account-of-bob" {
		t.Fatalf("contacts/bob = %q, %v", v, ok)
	}
	if _, ok := s.Get("msgs", "1"); ok {
		t.Fatal("deleted key came back")
	}
	if got := s.Keys("msgs"); len(got) != 1 || got[0] != "2" {
		t.Fatalf("Keys(msgs) = %v", got)
	}
}

func TestStoreRefusesWrongKey(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, newKey(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(dir, newKey(t), Options{}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("Open with another key: %v, want ErrWrongKey", err)
	}
}

func TestStoreHoldsNoPlaintextOnDisk(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, newKey(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("meet me at the lighthouse at dawn")
	if err := s.Put("messages-bucket", "message-key", secret); err != nil {
		t.Fatal(err)
	}
	s.Close()
	raw, err := os.ReadFile(filepath.Join(dir, fileName))
	if err != nil {
		t.Fatal(err)
	}
	for _, needle := range [][]byte{secret, []byte("messages-bucket"), []byte("message-key")} {
		if bytes.Contains(raw, needle) {
			t.Fatalf("log holds %q in clear", needle)
		}
	}
}

func TestStoreDetectsTamperedRecord(t *testing.T) {
	dir, key := t.TempDir(), newKey(t)
	s, _ := Open(dir, key, Options{})
	s.Put("b", "k1", []byte("v1"))
	s.Put("b", "k2", []byte("v2"))
	s.Close()
	path := filepath.Join(dir, fileName)
	raw, _ := os.ReadFile(path)
	// Flip a byte inside the second-to-last record (not the final one, which could be a torn write).
	raw[headerSize+4+30+60] ^= 1
	os.WriteFile(path, raw, 0o600)
	if _, err := Open(dir, key, Options{}); !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrWrongKey) {
		t.Fatalf("Open of tampered log: %v, want ErrCorrupt", err)
	}
}

func TestStoreDropsTornFinalRecord(t *testing.T) {
	dir, key := t.TempDir(), newKey(t)
	s, _ := Open(dir, key, Options{})
	s.Put("b", "k1", []byte("v1"))
	s.Put("b", "k2", bytes.Repeat([]byte("x"), 100))
	s.Close()
	path := filepath.Join(dir, fileName)
	raw, _ := os.ReadFile(path)
	os.WriteFile(path, raw[:len(raw)-10], 0o600)
	s, err := Open(dir, key, Options{})
	if err != nil {
		t.Fatalf("Open after torn write: %v", err)
	}
	if _, ok := s.Get("b", "k1"); !ok {
		t.Fatal("complete batch lost")
	}
	if _, ok := s.Get("b", "k2"); ok {
		t.Fatal("torn batch applied")
	}
	// The store keeps working after the cut.
	if err := s.Put("b", "k3", []byte("v3")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(dir, key, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok := s.Get("b", "k3"); !ok {
		t.Fatal("write after recovery lost")
	}
}

func TestStoreRefusesReorderedRecords(t *testing.T) {
	dir, key := t.TempDir(), newKey(t)
	s, _ := Open(dir, key, Options{})
	s.Put("b", "k", []byte("AAAA"))
	s.Put("b", "k", []byte("BBBB"))
	s.Put("b", "z", []byte("CCCC"))
	s.Close()
	path := filepath.Join(dir, fileName)
	raw, _ := os.ReadFile(path)
	// Split into records and swap records 1 and 2.
	recs := [][]byte{}
	p := raw[headerSize:]
	for len(p) > 0 {
		n := int(uint32(p[0])<<24 | uint32(p[1])<<16 | uint32(p[2])<<8 | uint32(p[3]))
		recs = append(recs, p[:4+n])
		p = p[4+n:]
	}
	recs[1], recs[2] = recs[2], recs[1]
	out := append([]byte(nil), raw[:headerSize]...)
	for _, r := range recs {
		out = append(out, r...)
	}
	os.WriteFile(path, out, 0o600)
	if _, err := Open(dir, key, Options{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open of reordered log: %v, want ErrCorrupt", err)
	}
}

func TestStoreCompactsAndKeepsState(t *testing.T) {
	dir, key := t.TempDir(), newKey(t)
	s, err := Open(dir, key, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	val := bytes.Repeat([]byte("v"), 4096)
	for i := range 1000 {
		if err := s.Put("b", fmt.Sprint(i%10), val); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	fi, _ := os.Stat(filepath.Join(dir, fileName))
	if fi.Size() > 2*minCompact {
		t.Fatalf("log of %d bytes after overwriting 10 keys 100 times: not compacted", fi.Size())
	}
	s, err = Open(dir, key, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Len("b") != 10 {
		t.Fatalf("%d keys after compaction, want 10", s.Len("b"))
	}
}

func TestStoreRefusesOversizedValues(t *testing.T) {
	s, _ := Open(t.TempDir(), newKey(t), Options{})
	defer s.Close()
	if err := s.Put(string(make([]byte, MaxNameLen+1)), "k", nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized bucket: %v", err)
	}
}

func FuzzDecodeBatch(f *testing.F) {
	f.Add(encodeBatch(nil))
	f.Add(encodeBatch([]op{{kind: opPut, bucket: "b", key: "k", value: []byte("v")}, {kind: opDelete, bucket: "b", key: "x"}}))
	f.Fuzz(func(t *testing.T, p []byte) {
		ops, err := decodeBatch(p)
		if err != nil {
			return
		}
		if !bytes.Equal(encodeBatch(ops), p) {
			t.Fatal("decoded batch does not re-encode to its input")
		}
	})
}
