package safety

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata vectors and fuzz seeds")

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestIterationReproducesSignalVector runs our iterated hash with Signal's
// parameters (version 0x0000, 5200 iterations, the 33-byte identity key as
// "key" and the phone number as "id") and checks Signal's published
// fingerprints and 60-digit display string.
func TestIterationReproducesSignalVector(t *testing.T) {
	b, err := os.ReadFile("testdata/signal_fingerprint_v1.json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Iterations       int    `json:"iterations"`
		Version          string `json:"version_bytes"`
		AliceID          string `json:"alice_id"`
		AliceIdentityKey string `json:"alice_identity_key"`
		BobID            string `json:"bob_id"`
		BobIdentityKey   string `json:"bob_identity_key"`
		AlicePrefix      string `json:"alice_fingerprint_prefix32"`
		BobPrefix        string `json:"bob_fingerprint_prefix32"`
		Displayable      string `json:"displayable"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	ver := unhex(t, v.Version)
	a := iteratedHash(ver, []byte(v.AliceID), unhex(t, v.AliceIdentityKey), v.Iterations)
	bo := iteratedHash(ver, []byte(v.BobID), unhex(t, v.BobIdentityKey), v.Iterations)
	if got := hex.EncodeToString(a[:32]); got != v.AlicePrefix {
		t.Errorf("alice fingerprint %s, want %s", got, v.AlicePrefix)
	}
	if got := hex.EncodeToString(bo[:32]); got != v.BobPrefix {
		t.Errorf("bob fingerprint %s, want %s", got, v.BobPrefix)
	}
	if got := pairDigits(a[:], bo[:]); got != v.Displayable {
		t.Errorf("display %s, want %s", got, v.Displayable)
	}
	if got := pairDigits(bo[:], a[:]); got != v.Displayable {
		t.Errorf("display from bob's side %s, want %s", got, v.Displayable)
	}
}

// key returns a deterministic 32-byte test key.
func key(label string) []byte {
	h := sha256.Sum256([]byte(label))
	return h[:]
}

func party(name string, devices ...string) Party {
	p := Party{ID: []byte("account:" + name)}
	for _, d := range devices {
		p.DeviceKeys = append(p.DeviceKeys, key(name+"/"+d))
	}
	return p
}

func mustNew(t *testing.T, local Party, others ...Party) *Number {
	t.Helper()
	n, err := New(local, others...)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func compare(t *testing.T, scanned []byte, mine *Number) bool {
	t.Helper()
	ok, err := Compare(scanned, mine)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func TestOneToOneBothSidesShowSameNumberAndScanMatches(t *testing.T) {
	alice, bob := party("alice", "phone", "laptop"), party("bob", "phone")
	a, b := mustNew(t, alice, bob), mustNew(t, bob, alice)
	if a.Digits() != b.Digits() || len(a.Digits()) != DigitsLen {
		t.Fatalf("digits differ or wrong length: %q vs %q", a.Digits(), b.Digits())
	}
	if !compare(t, b.QRPayload(), a) || !compare(t, a.QRPayload(), b) {
		t.Fatal("honest scan did not match")
	}
	if compare(t, a.QRPayload(), a) {
		t.Fatal("scanning one's own code matched")
	}
	if got := strings.Count(a.String(), " "); got != 11 {
		t.Fatalf("String() has %d separators, want 11: %q", got, a.String())
	}
}

func TestGroupAllMembersShowSameNumberAndScanMatches(t *testing.T) {
	ps := []Party{party("alice", "a"), party("bob", "b1", "b2"), party("carol", "c"), party("dave", "d")}
	var ns []*Number
	for i, p := range ps {
		others := append(append([]Party{}, ps[:i]...), ps[i+1:]...)
		ns = append(ns, mustNew(t, p, others...))
	}
	for i := range ns {
		if ns[i].Digits() != ns[0].Digits() || len(ns[i].Digits()) != DigitsLen {
			t.Fatalf("member %d digits %q, member 0 %q", i, ns[i].Digits(), ns[0].Digits())
		}
		for j := range ns {
			if got := compare(t, ns[j].QRPayload(), ns[i]); got != (i != j) {
				t.Fatalf("member %d scanning member %d: match = %v", i, j, got)
			}
		}
	}
	// An outsider's payload with the right combined hash prefix but its
	// own fingerprint does not match.
	outsider := mustNew(t, party("eve", "e"), ps...)
	forged := append(ns[0].QRPayload()[:3+payloadHashSize], outsider.local...)
	if compare(t, forged, ns[1]) {
		t.Fatal("payload from a non-member matched")
	}
}

func TestOwnDevicesOnlyConversationMatchesBetweenDevices(t *testing.T) {
	me := party("alice", "phone", "laptop")
	n := mustNew(t, me)
	if len(n.Digits()) != DigitsLen || !compare(t, mustNew(t, me).QRPayload(), n) {
		t.Fatal("two devices of one account do not match")
	}
	changed := party("alice", "phone", "tablet")
	if compare(t, mustNew(t, changed).QRPayload(), n) {
		t.Fatal("a different device set matched")
	}
}

func TestNumberIgnoresInputOrder(t *testing.T) {
	alice := party("alice", "1", "2", "3")
	rev := Party{ID: alice.ID, DeviceKeys: [][]byte{alice.DeviceKeys[2], alice.DeviceKeys[0], alice.DeviceKeys[1]}}
	bob, carol := party("bob", "1"), party("carol", "1")
	if mustNew(t, alice, bob).Digits() != mustNew(t, rev, bob).Digits() {
		t.Fatal("device key order changed the 1:1 number")
	}
	if mustNew(t, alice, bob, carol).Digits() != mustNew(t, rev, carol, bob).Digits() {
		t.Fatal("party or key order changed the group number")
	}
}

func TestNumberChangesWhenAnyDeviceKeyChanges(t *testing.T) {
	alice, bob, carol := party("alice", "1", "2"), party("bob", "1"), party("carol", "1")
	for _, group := range []bool{false, true} {
		others := []Party{bob}
		if group {
			others = append(others, carol)
		}
		base := mustNew(t, alice, others...)
		theirs := mustNew(t, bob, append([]Party{alice}, others[1:]...)...)
		var variants []Party
		for i := range alice.DeviceKeys {
			for j := range alice.DeviceKeys[i] {
				p := Party{ID: alice.ID}
				for k, dk := range alice.DeviceKeys {
					dk = bytes.Clone(dk)
					if k == i {
						dk[j] ^= 1
					}
					p.DeviceKeys = append(p.DeviceKeys, dk)
				}
				variants = append(variants, p)
			}
		}
		variants = append(variants,
			Party{ID: alice.ID, DeviceKeys: alice.DeviceKeys[:1]},                             // device removed
			Party{ID: alice.ID, DeviceKeys: append(alice.DeviceKeys[:2:2], key("alice/new"))}, // device added
			Party{ID: []byte("account:alicf"), DeviceKeys: alice.DeviceKeys})                  // other account
		for vi, v := range variants {
			n := mustNew(t, v, others...)
			if n.Digits() == base.Digits() {
				t.Fatalf("group=%v variant %d: digits unchanged", group, vi)
			}
			if compare(t, n.QRPayload(), theirs) {
				t.Fatalf("group=%v variant %d: changed key still matches the other side", group, vi)
			}
		}
	}
}

func TestCompareReportsVersionAndMalformedPayloads(t *testing.T) {
	n := mustNew(t, party("alice", "1"), party("bob", "1"))
	p := n.QRPayload()
	v2 := bytes.Clone(p)
	v2[0] = 2
	_, err := Compare(v2, n)
	var ve *VersionError
	if !errors.As(err, &ve) || ve.Got != 2 || ve.Want != 1 || !errors.Is(err, ErrVersion) {
		t.Fatalf("version 2 error = %v, want *VersionError{2,1}", err)
	}
	for _, bad := range [][]byte{nil, p[:1], p[:len(p)-1], append(bytes.Clone(p), 0)} {
		if _, err := Compare(bad, n); !errors.Is(err, ErrBadPayload) {
			t.Fatalf("Compare(%x) error = %v, want ErrBadPayload", bad, err)
		}
	}
}

// TestEveryPayloadByteFlipNeverMatches flips every byte of both payload
// kinds: the result is a typed error or a mismatch, never a match.
func TestEveryPayloadByteFlipNeverMatches(t *testing.T) {
	alice, bob, carol := party("alice", "1"), party("bob", "1"), party("carol", "1")
	cases := []struct{ shown, mine *Number }{
		{mustNew(t, bob, alice), mustNew(t, alice, bob)},
		{mustNew(t, bob, alice, carol), mustNew(t, alice, bob, carol)},
	}
	for ci, c := range cases {
		p := c.shown.QRPayload()
		if !compare(t, p, c.mine) {
			t.Fatalf("case %d: honest payload does not match", ci)
		}
		for i := range p {
			for _, m := range []byte{0x01, 0x80, 0xff} {
				q := bytes.Clone(p)
				q[i] ^= m
				ok, err := Compare(q, c.mine)
				if ok {
					t.Fatalf("case %d byte %d mask %#x: flipped payload matched", ci, i, m)
				}
				if err != nil && !errors.Is(err, ErrBadPayload) && !errors.Is(err, ErrVersion) {
					t.Fatalf("case %d byte %d: untyped error %v", ci, i, err)
				}
			}
		}
	}
}

func TestNewRefusesBadParties(t *testing.T) {
	ok := party("bob", "1")
	dup := party("alice", "1")
	dup.DeviceKeys = append(dup.DeviceKeys, dup.DeviceKeys[0])
	cases := []Party{
		{ID: nil, DeviceKeys: ok.DeviceKeys},
		{ID: []byte("x"), DeviceKeys: nil},
		{ID: []byte("x"), DeviceKeys: [][]byte{{}}},
		{ID: make([]byte, maxIDSize+1), DeviceKeys: ok.DeviceKeys},
		{ID: []byte("x"), DeviceKeys: [][]byte{make([]byte, maxKeySize+1)}},
		dup,
	}
	for i, p := range cases {
		if _, err := New(p, ok); !errors.Is(err, ErrBadParty) {
			t.Fatalf("case %d: error = %v, want ErrBadParty", i, err)
		}
	}
	if _, err := New(ok, ok); !errors.Is(err, ErrBadParty) {
		t.Fatalf("same party twice: error = %v, want ErrBadParty", err)
	}
}

type vectors struct {
	AliceFingerprint string `json:"alice_fingerprint"`
	PairDigits       string `json:"pair_digits"`
	PairPayload      string `json:"pair_payload_alice"`
	GroupDigits      string `json:"group_digits"`
	GroupPayload     string `json:"group_payload_alice"`
}

func makeVectors(t *testing.T) vectors {
	alice, bob, carol := party("alice", "phone", "laptop"), party("bob", "phone"), party("carol", "tablet")
	fp, err := fingerprint(alice)
	if err != nil {
		t.Fatal(err)
	}
	pair, group := mustNew(t, alice, bob), mustNew(t, alice, bob, carol)
	return vectors{
		AliceFingerprint: hex.EncodeToString(fp[:]),
		PairDigits:       pair.String(), PairPayload: hex.EncodeToString(pair.QRPayload()),
		GroupDigits: group.String(), GroupPayload: hex.EncodeToString(group.QRPayload()),
	}
}

// TestKnownAnswerVectors pins the fingerprint, digits and payload formats
// byte for byte. Inputs: account IDs "account:<name>", device keys
// SHA-256("<name>/<device>"). Run with -update after a deliberate change.
func TestKnownAnswerVectors(t *testing.T) {
	got := makeVectors(t)
	path := filepath.Join("testdata", "vectors.json")
	if *update {
		b, _ := json.MarshalIndent(got, "", "  ")
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join("testdata", "fuzz", "FuzzCompare")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, p := range []string{got.PairPayload, got.GroupPayload} {
			raw, _ := hex.DecodeString(p)
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", raw)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var want vectors
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("vectors changed:\n got %+v\nwant %+v", got, want)
	}
}

func FuzzCompare(f *testing.F) {
	alice, bob, carol := party("alice", "phone", "laptop"), party("bob", "phone"), party("carol", "tablet")
	mine := []*Number{}
	for _, others := range [][]Party{{alice}, {alice, carol}} {
		n, err := New(bob, others...)
		if err != nil {
			f.Fatal(err)
		}
		mine = append(mine, n)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, n := range mine {
			ok, err := Compare(b, n)
			if err != nil && !errors.Is(err, ErrBadPayload) && !errors.Is(err, ErrVersion) {
				t.Fatalf("untyped error %v", err)
			}
			if ok && bytes.Equal(b, n.QRPayload()) {
				t.Fatal("own payload matched")
			}
		}
	})
}

func BenchmarkSafetyNumberOneToOne(b *testing.B) {
	alice, bob := party("alice", "1", "2"), party("bob", "1")
	for b.Loop() {
		if _, err := New(alice, bob); err != nil {
			b.Fatal(err)
		}
	}
}
