package keyregistry

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"testing"
	"time"

	"filippo.io/torchwood"
	record "github.com/libp2p/go-libp2p-record"
	"golang.org/x/mod/sumdb/note"

	"github.com/iagon/gridchat/chain"
	"github.com/iagon/gridchat/e2ee"
)

// claimLab makes username claims with log receipts whose witness
// cosignatures carry chosen times. The cosignatures are made by hand after
// c2sp.org/tlog-cosignature (cosignature/v1), so the test does not share
// code with what it checks.
type claimLab struct {
	t        *testing.T
	origin   string
	log      *chain.LogSigner
	wkeys    []ed25519.PrivateKey
	wnames   []string
	policy   *chain.Policy
	now      time.Time // the validators' clock
	base     time.Time // statement and witness times are offsets from it
	validate map[string]interface {
		Validate(string, []byte) error
		Select(string, [][]byte) (int, error)
	}
	seen map[string]*held // opened records (opened)
}

func newClaimLab(t *testing.T, witnesses, quorum int) *claimLab {
	t.Helper()
	_, lk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	l := &claimLab{t: t, origin: "gridchat.test/log/claims"}
	if l.log, err = chain.NewLogSigner(l.origin, lk); err != nil {
		t.Fatal(err)
	}
	logV := l.log.Verifier()
	l.policy = &chain.Policy{Quorum: quorum, LogKey: func(o string) (note.Verifier, error) {
		if o != l.origin {
			return nil, fmt.Errorf("unknown log %q", o)
		}
		return logV, nil
	}}
	for i := range witnesses {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("gridchat.test/witness/%d", i)
		key := append([]byte{4}, pub...)
		v, err := torchwood.NewCosignatureVerifier(fmt.Sprintf("%s+%08x+%s", name, noteKeyHash(name, key), base64.StdEncoding.EncodeToString(key)))
		if err != nil {
			t.Fatal(err)
		}
		l.wkeys, l.wnames = append(l.wkeys, priv), append(l.wnames, name)
		l.policy.Witnesses = append(l.policy.Witnesses, v)
	}
	l.base = time.Now().Add(-time.Hour).Truncate(time.Second)
	l.now = l.base.Add(time.Hour)
	vals := Validators(ValidatorConfig{Now: func() time.Time { return l.now }, Receipts: l.policy})
	l.validate = map[string]interface {
		Validate(string, []byte) error
		Select(string, [][]byte) (int, error)
	}{NSUsername: vals[NSUsername]}
	return l
}

func noteKeyHash(name string, key []byte) uint32 {
	h := sha256.Sum256(append([]byte(name+"\n"), key...))
	return binary.BigEndian.Uint32(h[:4])
}

// at returns the lab's base time plus s seconds.
func (l *claimLab) at(s int) time.Time { return l.base.Add(time.Duration(s) * time.Second) }

// noCosig marks a witness that does not cosign.
const noCosig = -1

// receipt returns the receipt of r in a one-entry log whose checkpoint
// witness i cosigned at base+times[i] seconds (noCosig: not at all).
func (l *claimLab) receipt(r chain.Record, times ...int) []byte {
	l.t.Helper()
	e, err := chain.NewEntry(r)
	if err != nil {
		l.t.Fatal(err)
	}
	cp := chain.Checkpoint{Origin: l.origin, Size: 1}
	copy(cp.Root[:], e.LeafHash())
	text := cp.Text()
	signed, err := note.Sign(&note.Note{Text: text}, l.log)
	if err != nil {
		l.t.Fatal(err)
	}
	for i, s := range times {
		if s == noCosig {
			continue
		}
		ts := uint64(l.at(s).Unix())
		msg := fmt.Sprintf("cosignature/v1\ntime %d\n%s", ts, text)
		sig := binary.BigEndian.AppendUint32(nil, noteKeyHash(l.wnames[i], append([]byte{4}, l.wkeys[i].Public().(ed25519.PublicKey)...)))
		sig = binary.BigEndian.AppendUint64(sig, ts)
		sig = append(sig, ed25519.Sign(l.wkeys[i], []byte(msg))...)
		signed = append(signed, "— "+l.wnames[i]+" "+base64.StdEncoding.EncodeToString(sig)+"\n"...)
	}
	return (&chain.Receipt{Index: 0, Checkpoint: signed}).Marshal()
}

// claimant is an account that claims a name.
type claimant struct {
	dev   *e2ee.DeviceKeys
	chain *e2ee.Chain
	id    e2ee.AccountID
}

// account makes an account whose genesis is at base.
func (l *claimLab) account() *claimant {
	l.t.Helper()
	d, err := e2ee.NewDeviceKeys(l.base)
	if err != nil {
		l.t.Fatal(err)
	}
	c, err := e2ee.NewAccount(d, l.base)
	if err != nil {
		l.t.Fatal(err)
	}
	return &claimant{dev: d, chain: c, id: c.AccountID()}
}

// accounts makes two accounts, the first with the larger account ID, so a
// test can tell an order by time from an order by ID.
func (l *claimLab) accounts() (big, small *claimant) {
	a, b := l.account(), l.account()
	if bytes.Compare(a.id[:], b.id[:]) < 0 {
		a, b = b, a
	}
	return a, b
}

// set appends a set-username statement signed at base+s seconds.
func (l *claimLab) set(c *claimant, name string, s int) {
	l.t.Helper()
	if _, err := c.chain.Append(c.dev, &e2ee.SetUsername{Username: name}, l.at(s)); err != nil {
		l.t.Fatal(err)
	}
}

// record encodes c's chain with receipts for the statements named in
// receipts (seq → witness times).
func (l *claimLab) record(c *claimant, receipts map[uint64][]int) []byte {
	l.t.Helper()
	stmts := c.chain.Statements()
	acct := chain.DeriveAccountKey(stmts[0].Encode())
	rec := &Record{Chain: c.chain.Encode()}
	for seq := range uint64(len(stmts)) {
		if times, ok := receipts[seq]; ok {
			rec.Receipts = append(rec.Receipts, Receipt{Seq: seq, Body: l.receipt(chain.Record{Account: acct, Seq: seq, Body: stmts[seq].Encode()}, times...)})
		}
	}
	b, err := rec.Encode()
	if err != nil {
		l.t.Fatal(err)
	}
	st, err := e2ee.Replay(c.chain)
	if err != nil {
		l.t.Fatal(err)
	}
	if err := l.validate[NSUsername].Validate(UsernameKey(st.Username), b); err != nil {
		l.t.Fatalf("record of %s: %v", c.id, err)
	}
	return b
}

// winner runs the name validator's Select on values in both orders and
// returns the chosen value, failing if the order of values changes it.
func (l *claimLab) winner(name string, values ...[]byte) []byte {
	l.t.Helper()
	v := l.validate[NSUsername]
	i, err := v.Select(UsernameKey(name), values)
	if err != nil {
		l.t.Fatal(err)
	}
	rev := make([][]byte, len(values))
	for k := range values {
		rev[k] = values[len(values)-1-k]
	}
	j, err := v.Select(UsernameKey(name), rev)
	if err != nil {
		l.t.Fatal(err)
	}
	if !bytes.Equal(values[i], rev[j]) {
		l.t.Fatalf("Select chose differently for reversed values")
	}
	return values[i]
}

func TestEarlierWitnessedClaimWinsOverEarlierStatementTimeAndSmallerID(t *testing.T) {
	l := newClaimLab(t, 2, 1)
	late, early := l.accounts() // early has the smaller ID and signs first, but is witnessed later
	l.set(early, "alice", 10)
	l.set(late, "alice", 20)
	lateRec := l.record(late, map[uint64][]int{1: {30, noCosig}})
	earlyRec := l.record(early, map[uint64][]int{1: {noCosig, 40}})
	if got := l.winner("alice", earlyRec, lateRec); !bytes.Equal(got, lateRec) {
		t.Fatal("the claim witnessed at +30 s lost to one witnessed at +40 s")
	}
}

func TestOneLyingWitnessCannotBackdateAClaim(t *testing.T) {
	l := newClaimLab(t, 3, 2)
	a, b := l.accounts()
	l.set(a, "alice", 10)
	l.set(b, "alice", 10)
	// a's first witness claims it cosigned at +1 s; the quorum (2) was only
	// reached at +50 s. b's witnesses agree on +20 and +21 s.
	aRec := l.record(a, map[uint64][]int{1: {1, 50, 60}})
	bRec := l.record(b, map[uint64][]int{1: {noCosig, 20, 21}})
	if got := l.winner("alice", aRec, bRec); !bytes.Equal(got, bRec) {
		t.Fatal("one early cosignature moved a claim ahead of the quorum's time")
	}
}

func TestClaimsWitnessedInOneSecondFallToTheAccountID(t *testing.T) {
	l := newClaimLab(t, 1, 1)
	big, small := l.accounts()
	l.set(small, "alice", 30) // signed later: the statement time must not count
	l.set(big, "alice", 10)
	bigRec := l.record(big, map[uint64][]int{1: {40}})
	smallRec := l.record(small, map[uint64][]int{1: {40}})
	if got := l.winner("alice", bigRec, smallRec); !bytes.Equal(got, smallRec) {
		t.Fatal("equal witnessed times did not fall to the smaller account ID")
	}
}

func TestUnwitnessedClaimsFallToStatementTimeThenAccountID(t *testing.T) {
	l := newClaimLab(t, 1, 1)
	big, small := l.accounts()
	l.set(big, "alice", 10)
	l.set(small, "alice", 11)
	bigRec, smallRec := l.record(big, nil), l.record(small, nil)
	if got := l.winner("alice", smallRec, bigRec); !bytes.Equal(got, bigRec) {
		t.Fatal("the earlier signed claim lost while neither is witnessed")
	}
	big2, small2 := l.accounts()
	l.set(big2, "alice", 10)
	l.set(small2, "alice", 10)
	if got := l.winner("alice", l.record(big2, nil), l.record(small2, nil)); !bytes.Equal(got, l.record(small2, nil)) {
		t.Fatal("equal statement times did not fall to the smaller account ID")
	}
}

func TestClaimWithForgedOrAbsentReceiptLosesToAWitnessedOne(t *testing.T) {
	l := newClaimLab(t, 2, 1)
	forger, honest := l.account(), l.account()
	l.set(forger, "alice", 1)
	l.set(honest, "alice", 50)
	honestRec := l.record(honest, map[uint64][]int{1: {60, noCosig}})

	// No receipt, though signed 49 s earlier.
	bare := l.record(forger, nil)
	if got := l.winner("alice", bare, honestRec); !bytes.Equal(got, honestRec) {
		t.Fatal("a claim without a receipt beat a witnessed one")
	}

	// A receipt whose cosignature claims +2 s but does not verify: the
	// record is invalid and loses whatever it claims.
	good := l.record(forger, map[uint64][]int{1: {2, noCosig}})
	rec, err := DecodeRecord(good)
	if err != nil {
		t.Fatal(err)
	}
	forged := bytes.Clone(rec.Receipts[0].Body)
	line := []byte("— " + l.wnames[0] + " ")
	i := bytes.Index(forged, line) + len(line) + 40 // inside the base64 of the Ed25519 signature
	if forged[i] == 'A' {
		forged[i] = 'B'
	} else {
		forged[i] = 'A'
	}
	rec.Receipts[0].Body = forged
	forgedRec, err := rec.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.validate[NSUsername].Validate(UsernameKey("alice"), forgedRec); !errors.Is(err, ErrBadProof) && !errors.Is(err, ErrMalformed) {
		t.Fatalf("forged cosignature: %v", err)
	}
	if got := l.winner("alice", forgedRec, honestRec); !bytes.Equal(got, honestRec) {
		t.Fatal("a claim with a forged receipt beat a witnessed one")
	}

	// A receipt cosigned only by a key outside the policy: no quorum.
	outsider := newClaimLab(t, 1, 1)
	outsider.log, outsider.origin = l.log, l.origin
	stmts := forger.chain.Statements()
	rec.Receipts[0].Body = outsider.receipt(chain.Record{Account: chain.DeriveAccountKey(stmts[0].Encode()), Seq: 1, Body: stmts[1].Encode()}, 2)
	outsiderRec, err := rec.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.validate[NSUsername].Validate(UsernameKey("alice"), outsiderRec); !errors.Is(err, ErrBadProof) {
		t.Fatalf("receipt cosigned outside the policy: %v", err)
	}
	if got := l.winner("alice", outsiderRec, honestRec); !bytes.Equal(got, honestRec) {
		t.Fatal("a claim cosigned outside the policy beat a witnessed one")
	}
}

func TestRenewalKeepsTheClaimsPlaceAndAGapStartsANewClaim(t *testing.T) {
	l := newClaimLab(t, 1, 1)
	const lifetime = 90 * 24 * time.Hour // the validators' default
	a := l.account()
	l.set(a, "alice", 10)
	l.set(a, "alice", 20) // renewal
	l.set(a, "bob", 30)   // leaves the name
	l.set(a, "alice", 40) // a new claim
	l.set(a, "alice", 50) // renewal
	h, err := newVerifier(ValidatorConfig{Now: func() time.Time { return l.now }}).open(l.record(a, nil))
	if err != nil {
		t.Fatal(err)
	}
	if h.claim.start != 4 || !h.claim.at.Equal(l.at(40)) {
		t.Fatalf("claim starts at statement %d (%s), want 4 (+40 s)", h.claim.start, h.claim.at)
	}
	w := map[uint64]time.Time{3: l.at(25), 4: l.at(70), 5: l.at(60)}
	if c := claimOf(h, w, lifetime); !c.witnessed.Equal(l.at(60)) {
		t.Fatalf("witnessed %s, want the earliest receipt at or after the claim's start (+60 s)", c.witnessed)
	}
	// A renewal after the claim lapsed starts a new claim.
	if c := claimOf(h, nil, 5*time.Second); c.start != 5 {
		t.Fatalf("claim with a lapse before its last renewal starts at %d, want 5", c.start)
	}
}

func TestSelectIsDeterministicUnderPermutation(t *testing.T) {
	l := newClaimLab(t, 2, 1)
	var values [][]byte
	add := func(b []byte) []byte { values = append(values, b); return b }

	// One account at two versions: its renewal-free extension carries the
	// receipt that witnesses its claim at +40 s.
	a := l.account()
	l.set(a, "alice", 5)
	add(l.record(a, nil))
	if _, err := a.chain.Append(a.dev, &e2ee.SetProfile{Profile: e2ee.Profile{Name: "A"}}, l.at(6)); err != nil {
		t.Fatal(err)
	}
	add(l.record(a, map[uint64][]int{2: {40, 41}}))
	// Two accounts witnessed in the same second as a, and one later.
	for _, w := range []int{40, 40, 55} {
		c := l.account()
		l.set(c, "alice", 1)
		add(l.record(c, map[uint64][]int{1: {noCosig, w}}))
	}
	// Unwitnessed claims signed earliest, and junk.
	for range 2 {
		c := l.account()
		l.set(c, "alice", 0)
		add(l.record(c, nil))
	}
	add([]byte("junk"))
	// Three accounts that claimed alice before everyone (witnessed at
	// +30 s) and left it: their releases, and the stale claims of two.
	var stale [][]byte
	for k := range 3 {
		c := l.account()
		l.set(c, "alice", 0)
		old := l.record(c, map[uint64][]int{1: {30, 30}})
		l.set(c, fmt.Sprintf("alice.%d", k), 2)
		add(l.record(c, map[uint64][]int{1: {30, 30}}))
		if k < 2 {
			stale = append(stale, add(old))
		}
	}

	// The expected winner by the documented order: of the claims witnessed
	// at +40 s, the smallest account ID.
	var want []byte
	for _, v := range values {
		h, err := newVerifier(ValidatorConfig{Now: func() time.Time { return l.now }, Receipts: l.policy}).open(v)
		if err != nil || h.claim.witnessed.IsZero() || !h.claim.witnessed.Equal(l.at(40)) {
			continue
		}
		if want == nil || bytes.Compare(h.acct.ID[:], mustOpen(t, l, want).acct.ID[:]) < 0 {
			want = v
		}
	}
	if want == nil {
		t.Fatal("no claim witnessed at +40 s")
	}

	// A node that has seen no release (a fresh one), and one that has seen
	// them all: with the releases remembered, a stale claim holds nothing
	// even alone, so it never wins over a live claim.
	cfg := ValidatorConfig{Now: func() time.Time { return l.now }, Receipts: l.policy}
	remembering := Validators(cfg)[NSUsername]
	for _, b := range values {
		_ = remembering.Validate(UsernameKey("alice"), b)
	}
	rng := mrand.New(mrand.NewPCG(1, 2))
	selectRounds(t, l, rng, usernameValidator{v: newVerifier(cfg)}, values, stale, want, false)
	selectRounds(t, l, rng, remembering, values, stale, want, true)
}

// selectRounds checks v's Select on random subsets and permutations of
// values: want wins all of them, a subset's winner beats every best record
// of the subset pairwise, and a stale claim never wins beside its release
// (nor, if remember, beside any live claim).
func selectRounds(t *testing.T, l *claimLab, rng *mrand.Rand, v record.Validator, values, stale [][]byte, want []byte, remember bool) {
	t.Helper()
	isStale := func(b []byte) bool {
		for _, st := range stale {
			if bytes.Equal(b, st) {
				return true
			}
		}
		return false
	}
	for round := range 300 {
		perm := append([][]byte(nil), values...)
		rng.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
		n := 2 + rng.IntN(len(perm)-1) // every subset size from 2 up, as kad-dht compares pairs
		sub := perm[:n]
		i, err := v.Select(UsernameKey("alice"), sub)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		// The winner of a subset is the one the order puts first among the
		// subset's best record of each account: it must beat each of them
		// pairwise too. (On a node that has not seen the releases, a stale
		// claim superseded by its account's release in the subset can beat
		// the winner alone: it is not a best record.)
		for _, other := range sub {
			if bytes.Equal(other, sub[i]) || !remember && supersededIn(t, l, other, sub) {
				continue
			}
			if j, err := v.Select(UsernameKey("alice"), [][]byte{other, sub[i]}); err == nil && j != 1 {
				t.Fatalf("round %d: the subset's winner loses a pairwise Select", round)
			}
		}
		if n == len(perm) && !bytes.Equal(sub[i], want) {
			t.Fatalf("round %d: Select chose another claim than the order's first", round)
		}
		if isStale(sub[i]) && supersededIn(t, l, sub[i], sub) {
			t.Fatalf("round %d: Select chose a claim whose account's release was given", round)
		}
		if remember && isStale(sub[i]) {
			for _, other := range sub {
				if h, ok := l.opened(other); ok && h.acct.Username == "alice" && !isStale(other) {
					t.Fatalf("round %d: a remembering node chose a stale claim over a live one", round)
				}
			}
		}
	}
	// And on all values, whatever their order, the same winner.
	for round := range 50 {
		perm := append([][]byte(nil), values...)
		rng.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
		i, err := v.Select(UsernameKey("alice"), perm)
		if err != nil || !bytes.Equal(perm[i], want) {
			t.Fatalf("round %d: Select on all values: %v", round, err)
		}
	}
}

// supersededIn reports whether values hold a longer chain of v's account.
func supersededIn(t *testing.T, l *claimLab, v []byte, values [][]byte) bool {
	t.Helper()
	hv, ok := l.opened(v)
	if !ok {
		return false
	}
	for _, o := range values {
		if ho, ok := l.opened(o); ok && ho.acct.ID == hv.acct.ID && relate(hv, ho) == e2ee.Extends {
			return true
		}
	}
	return false
}

// opened returns b opened by a verifier of the lab's policy, remembered
// (replays with receipts are slow).
func (l *claimLab) opened(b []byte) (*held, bool) {
	if h, ok := l.seen[string(b)]; ok {
		return h, h != nil
	}
	h, err := newVerifier(ValidatorConfig{Now: func() time.Time { return l.now }, Receipts: l.policy}).open(b)
	if err != nil {
		h = nil
	}
	if l.seen == nil {
		l.seen = make(map[string]*held)
	}
	l.seen[string(b)] = h
	return h, h != nil
}

func mustOpen(t *testing.T, l *claimLab, b []byte) *held {
	t.Helper()
	h, err := newVerifier(ValidatorConfig{Now: func() time.Time { return l.now }, Receipts: l.policy}).open(b)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestReleaseSupersedesItsAccountsClaimAndOrdersAfterLiveClaims(t *testing.T) {
	l := newClaimLab(t, 1, 1)
	big, small := l.accounts()
	// small claims alice first (witnessed at +20 s), then renames.
	l.set(small, "alice", 10)
	oldClaim := l.record(small, map[uint64][]int{1: {20}})
	l.set(small, "alice.two", 30)
	release := l.record(small, map[uint64][]int{1: {20}, 2: {35}})
	if err := l.validate[NSUsername].Validate(UsernameKey("alice"), release); err != nil {
		t.Fatalf("release of a name the chain set: %v", err)
	}
	// big claims alice after small left it (witnessed at +50 s).
	l.set(big, "alice", 40)
	newClaim := l.record(big, map[uint64][]int{1: {50}})

	if got := l.winner("alice", oldClaim, release); !bytes.Equal(got, release) {
		t.Fatal("the account's older claim beat its release")
	}
	if got := l.winner("alice", oldClaim, release, newClaim); !bytes.Equal(got, newClaim) {
		t.Fatal("a released name did not go to the live claim")
	}
	if got := l.winner("alice", release, newClaim); !bytes.Equal(got, newClaim) {
		t.Fatal("a release (smaller ID, earlier witness) beat a live claim")
	}
	// Releases alone: still one choice, the smaller account ID.
	l.set(big, "bob", 60)
	bigRelease := l.record(big, map[uint64][]int{1: {50}})
	if got := l.winner("alice", bigRelease, release); !bytes.Equal(got, release) {
		t.Fatal("of two releases, the larger account ID was chosen")
	}

	// A node's DHT validator that has seen the release counts it even
	// when it is not among the values: the stale claim then loses to the
	// live claim on its own (a peer holding the new claim refuses a replay
	// of the stale one). One that has not seen it orders the two claims.
	fresh := func() record.Validator {
		return Validators(ValidatorConfig{Now: func() time.Time { return l.now }, Receipts: l.policy})[NSUsername]
	}
	for name, tc := range map[string]struct {
		seen []byte
		want []byte
	}{"release not seen": {nil, oldClaim}, "release seen": {release, newClaim}, "the newer claim's own release seen": {bigRelease, oldClaim}} {
		v := fresh()
		if tc.seen != nil {
			if err := v.Validate(UsernameKey("alice"), tc.seen); err != nil {
				t.Fatal(err)
			}
		}
		for _, vals := range [][][]byte{{oldClaim, newClaim}, {newClaim, oldClaim}} {
			i, err := v.Select(UsernameKey("alice"), vals)
			if err != nil || !bytes.Equal(vals[i], tc.want) {
				t.Fatalf("%s: Select chose %d (%v)", name, i, err)
			}
		}
	}
	// A chain that never set the name is refused under it, whatever else
	// it claimed.
	other := l.account()
	l.set(other, "alice.three", 10)
	if err := l.validate[NSUsername].Validate(UsernameKey("alice"), l.record(other, nil)); !errors.Is(err, ErrAccountMismatch) {
		t.Fatalf("record of an account that never claimed the name: %v", err)
	}
	// A release lapses with the claims it supersedes: once the statement
	// that last set the name is older than the claim lifetime.
	short := usernameValidator{v: newVerifier(ValidatorConfig{Now: func() time.Time { return l.now }, Receipts: l.policy,
		UsernameLifetime: l.now.Sub(l.at(10)) + time.Second})}
	if err := short.Validate(UsernameKey("alice"), release); err != nil {
		t.Fatalf("release inside the lifetime: %v", err)
	}
	short.v.cfg.UsernameLifetime -= 2 * time.Second
	if err := short.Validate(UsernameKey("alice"), release); !errors.Is(err, ErrUsernameLapsed) {
		t.Fatalf("release past the lifetime: %v", err)
	}
	if got := short.v.released(mustOpen(t, l, release)); len(got) != 0 {
		t.Fatalf("lapsed release still stored under %q", got)
	}
	if got := newVerifier(ValidatorConfig{Now: func() time.Time { return l.now }}).released(mustOpen(t, l, bigRelease)); len(got) != 1 || got[0] != "alice" {
		t.Fatalf("released names %q, want [alice]", got)
	}
}
