package chain

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"
)

// cosigner is a witness key that makes c2sp.org/tlog-cosignature
// (cosignature/v1) lines with a chosen time, by hand.
type cosigner struct {
	name string
	priv ed25519.PrivateKey
	hash uint32
	v    note.Verifier
}

func newCosigner(t *testing.T, name string) *cosigner {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key := append([]byte{4}, pub...)
	h := sha256.Sum256(append([]byte(name+"\n"), key...))
	c := &cosigner{name: name, priv: priv, hash: binary.BigEndian.Uint32(h[:4])}
	if c.v, err = torchwood.NewCosignatureVerifier(fmt.Sprintf("%s+%08x+%s", name, c.hash, base64.StdEncoding.EncodeToString(key))); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *cosigner) line(text string, unix int64) string {
	msg := fmt.Sprintf("cosignature/v1\ntime %d\n%s", unix, text)
	sig := binary.BigEndian.AppendUint32(nil, c.hash)
	sig = binary.BigEndian.AppendUint64(sig, uint64(unix))
	sig = append(sig, ed25519.Sign(c.priv, []byte(msg))...)
	return "— " + c.name + " " + base64.StdEncoding.EncodeToString(sig) + "\n"
}

func TestWitnessedIsTheQuorumsCosignatureTime(t *testing.T) {
	_, lk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	log, err := NewLogSigner("gridchat.test/log/w", lk)
	if err != nil {
		t.Fatal(err)
	}
	text := Checkpoint{Origin: log.Name(), Size: 7}.Text()
	signed, err := note.Sign(&note.Note{Text: text}, log)
	if err != nil {
		t.Fatal(err)
	}
	ws := []*cosigner{newCosigner(t, "w0"), newCosigner(t, "w1"), newCosigner(t, "w2")}
	outsider := newCosigner(t, "outsider")
	// A witness that signs plain Ed25519 notes (no timestamp) counts for
	// the quorum but carries no time.
	plainSigner, plainV := newPlainWitness(t, "plain")
	base := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC).Unix()
	cosigned := string(signed) + ws[0].line(text, base+30) + ws[1].line(text, base+10) + ws[2].line(text, base+20) +
		ws[1].line(text, base+50) + // the same witness again, later: it counts once, at its earliest
		outsider.line(text, base) // not in the policy: its time is ignored
	plainNote, err := note.Sign(&note.Note{Text: text}, plainSigner)
	if err != nil {
		t.Fatal(err)
	}
	_, plainLine, _ := strings.Cut(string(plainNote), "\n\n")
	cosigned += plainLine

	logKey := func(string) (note.Verifier, error) { return log.Verifier(), nil }
	witnesses := []note.Verifier{ws[0].v, ws[1].v, ws[2].v, plainV}
	for quorum, want := range map[int]int64{1: base + 10, 2: base + 20, 3: base + 30} {
		p := &Policy{LogKey: logKey, Witnesses: witnesses, Quorum: quorum}
		cp, err := p.OpenCheckpoint([]byte(cosigned))
		if err != nil {
			t.Fatal(err)
		}
		if !cp.Witnessed.Equal(time.Unix(want, 0)) {
			t.Errorf("quorum %d: witnessed %s, want %s", quorum, cp.Witnessed, time.Unix(want, 0).UTC())
		}
	}
	// Four cosignatures meet a quorum of 4, but only three carry a time.
	p := &Policy{LogKey: logKey, Witnesses: witnesses, Quorum: 4}
	if cp, err := p.OpenCheckpoint([]byte(cosigned)); err != nil || !cp.Witnessed.IsZero() {
		t.Errorf("quorum 4: witnessed %s, %v; want zero time", cp.Witnessed, err)
	}
	p = &Policy{LogKey: logKey, Witnesses: witnesses}
	if cp, err := p.OpenCheckpoint([]byte(cosigned)); err != nil || !cp.Witnessed.IsZero() {
		t.Errorf("quorum 0: witnessed %s, %v; want zero time", cp.Witnessed, err)
	}
}

func newPlainWitness(t *testing.T, name string) (note.Signer, note.Verifier) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}
