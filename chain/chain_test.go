package chain

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func TestEntryVectorIsStable(t *testing.T) {
	k := DeriveAccountKey([]byte("genesis statement"))
	e, err := NewEntry(Record{Account: k, Seq: 2, Body: []byte("add device")})
	if err != nil {
		t.Fatal(err)
	}
	got := hex.EncodeToString(e[:])
	if got != entryVector {
		t.Fatalf("entry = %s, want %s", got, entryVector)
	}
}

func TestEntryHidesAccountAndLinksNothing(t *testing.T) {
	genesis := []byte("genesis of alice, account id 0123456789abcdef")
	k := DeriveAccountKey(genesis)
	e0, _ := NewEntry(Record{Account: k, Seq: 0, Body: genesis})
	e1, _ := NewEntry(Record{Account: k, Seq: 1, Body: []byte("add device")})
	if bytes.Equal(e0[1:33], e1[1:33]) {
		t.Fatal("two statements of one account carry the same tag")
	}
	if bytes.Contains(e0[:], k[:8]) || bytes.Contains(e0[:], genesis[:8]) {
		t.Fatal("entry holds account key or record bytes")
	}
	tag := AccountTag(k, 1)
	if !bytes.Equal(e1[1:33], tag[:]) {
		t.Fatal("holder cannot find its entry by tag")
	}
	other := DeriveAccountKey([]byte("genesis of bob"))
	e2, _ := NewEntry(Record{Account: other, Seq: 1, Body: []byte("add device")})
	if bytes.Equal(e1[1:33], e2[1:33]) || !bytes.Equal(e1[33:], e2[33:]) {
		t.Fatal("tag must depend on the account, record hash only on the body")
	}
	if _, err := NewEntry(Record{Body: make([]byte, MaxRecordSize+1)}); !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("oversized record: %v", err)
	}
}

func TestParseReceiptIsStrict(t *testing.T) {
	good := "c2sp.org/tlog-proof@v1\nindex 3\n" + strings.Repeat("A", 43) + "=\n\norigin\n4\n" + strings.Repeat("A", 43) + "=\n\n— origin AAAA\n"
	rc, err := ParseReceipt([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rc.Marshal(), []byte(good)) {
		t.Fatalf("round trip changed the receipt:\n%s", rc.Marshal())
	}
	withExtra := strings.Replace(good, "index 3", "extra YW5jaG9yIGNhcmRhbm86cHJlcHJvZCBhYmNk\nindex 3", 1)
	rc, err = ParseReceipt([]byte(withExtra))
	if err != nil {
		t.Fatal(err)
	}
	if an, err := ParseAnchor(rc.Extra); err != nil || an.Chain != "cardano:preprod" || an.TxID != "abcd" || string(rc.Marshal()) != withExtra {
		t.Fatalf("extra %q: %+v %v", rc.Extra, an, err)
	}
	bad := map[string]string{
		"no header":      strings.TrimPrefix(good, "c2sp.org/tlog-proof@v1\n"),
		"empty extra":    strings.Replace(good, "index 3", "extra \nindex 3", 1),
		"bad extra":      strings.Replace(good, "index 3", "extra A\nindex 3", 1),
		"leading zero":   strings.Replace(good, "index 3", "index 03", 1),
		"negative index": strings.Replace(good, "index 3", "index -3", 1),
		"short hash":     strings.Replace(good, strings.Repeat("A", 43)+"=\n\norigin", "AAAA\n\norigin", 1),
		"no checkpoint":  good[:strings.Index(good, "\n\n")+2],
		"truncated":      good[:30],
		"too large":      good + strings.Repeat("x", MaxReceiptSize),
	}
	for name, s := range bad {
		if _, err := ParseReceipt([]byte(s)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
}

func FuzzParseReceipt(f *testing.F) {
	f.Add([]byte("c2sp.org/tlog-proof@v1\nindex 3\n" + strings.Repeat("A", 43) + "=\n\norigin\n4\n" + strings.Repeat("A", 43) + "=\n\n— origin AAAA\n"))
	f.Add([]byte("c2sp.org/tlog-proof@v1\nindex 0\n\nx\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		rc, err := ParseReceipt(b)
		if err != nil {
			return
		}
		rc2, err := ParseReceipt(rc.Marshal())
		if err != nil || !bytes.Equal(rc2.Marshal(), rc.Marshal()) {
			t.Fatalf("re-encoding is not stable: %v", err)
		}
	})
}

func FuzzParseCheckpointText(f *testing.F) {
	f.Add([]byte("gridchat.grid/log/x\n4\n" + strings.Repeat("A", 43) + "=\n"))
	f.Add([]byte("o\n01\nAA==\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cp, err := ParseCheckpointText(b)
		if err != nil {
			return
		}
		if cp.Origin == "" {
			t.Fatal("empty origin accepted")
		}
	})
}

// entryVector was computed by an independent implementation (Python's hmac
// and hashlib) of the construction documented on Entry.
const entryVector = "015c5a364a241e3c8b2956d913c64681bc2e128a4ff5ccff70947d2bf58abb10da7298424b4410cab43ca13b2c64faaca8a4eb0ec06465c52ae2ec04ca07e74334"
