package tlog

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/iagon/gridchat/chain"
)

// TestPublicLogRevealsNoUsernameAccountOrKey publishes records full of
// usernames, account IDs and keys, then reads the public log entry by entry
// and scans every file of the log directory for any of them in clear.
func TestPublicLogRevealsNoUsernameAccountOrKey(t *testing.T) {
	dir := t.TempDir()
	l := openTestLog(t, dir)
	ctx := context.Background()

	type account struct {
		username string
		genesis  []byte
		id       [32]byte
		keys     [][]byte
	}
	var secrets [][]byte
	var accounts []account
	for i := range 20 {
		a := account{username: fmt.Sprintf("user-%02d-wonderland", i)}
		for d := range 3 {
			pub := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{byte(i*3 + d + 1)}, 32)).Public().(ed25519.PublicKey)
			a.keys = append(a.keys, pub)
		}
		a.genesis = fmt.Appendf(nil, "genesis username=%s device-key=%x", a.username, a.keys[0])
		a.genesis = append(a.genesis, a.keys[0]...)
		a.id = sha256.Sum256(a.genesis)
		accounts = append(accounts, a)
		secrets = append(secrets, []byte(a.username), a.id[:])
		for _, k := range a.keys {
			secrets = append(secrets, k)
		}
	}
	// Every secret in the encodings a record might carry.
	var needles [][]byte
	for _, s := range secrets {
		needles = append(needles, s, []byte(hex.EncodeToString(s)), []byte(base64.StdEncoding.EncodeToString(s)),
			[]byte(base64.RawURLEncoding.EncodeToString(s)))
		if len(s) >= 32 {
			// Any 8-byte window of a raw key or ID.
			for j := 0; j+8 <= len(s); j++ {
				needles = append(needles, s[j:j+8])
			}
		}
	}

	var entries []chain.Entry
	for _, a := range accounts {
		ak := chain.DeriveAccountKey(a.genesis)
		recs := []chain.Record{
			{Account: ak, Seq: 0, Body: a.genesis},
			{Account: ak, Seq: 1, Body: fmt.Appendf(append([]byte("add-device "), a.keys[1]...), " account=%x username=%s", a.id, a.username)},
			{Account: ak, Seq: 2, Body: fmt.Appendf(append([]byte("revoke "), a.keys[0]...), " account=%x", a.id)},
		}
		for _, r := range recs {
			if !bytes.Contains(r.Body, []byte(a.username)) && !bytes.Contains(r.Body, a.keys[0]) && !bytes.Contains(r.Body, []byte(hex.EncodeToString(a.id[:]))) {
				t.Fatal("test records must carry the secrets")
			}
			rc, err := l.Publish(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			e, _ := chain.NewEntry(r)
			entries = append(entries, e)
			_ = rc
		}
	}
	raw, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pol := chain.Policy{LogKey: logKey(l)}
	cp, err := pol.OpenCheckpoint(raw)
	if err != nil {
		t.Fatal(err)
	}

	// Read the public log entry by entry.
	tags := map[[32]byte]bool{}
	for i := range cp.Size {
		e, err := l.Entry(ctx, i, cp.Size)
		if err != nil {
			t.Fatal(err)
		}
		if e != entries[i] {
			t.Fatalf("entry %d is not the committed entry", i)
		}
		for _, n := range needles {
			if bytes.Contains(e[:], n) {
				t.Fatalf("entry %d holds a secret %x", i, n)
			}
		}
		var tag [32]byte
		copy(tag[:], e[1:33])
		if tags[tag] {
			t.Fatalf("entry %d repeats an account tag: entries are linkable", i)
		}
		tags[tag] = true
	}

	// Scan every byte of every file the log wrote.
	files := 0
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		lower := bytes.ToLower(b)
		for _, n := range needles {
			if bytes.Contains(b, n) || !isBinary(n) && bytes.Contains(lower, bytes.ToLower(n)) {
				return fmt.Errorf("%s holds secret %q", path, n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 3 {
		t.Fatalf("scanned only %d files", files)
	}

	// The account holder can still find its entries.
	for ai, a := range accounts {
		ak := chain.DeriveAccountKey(a.genesis)
		for seq := range uint64(3) {
			tag := chain.AccountTag(ak, seq)
			if !bytes.Equal(entries[ai*3+int(seq)][1:33], tag[:]) {
				t.Fatalf("account %d cannot find its entry %d", ai, seq)
			}
		}
	}
}

func isBinary(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return true
		}
	}
	return false
}
