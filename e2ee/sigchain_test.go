package e2ee

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// fullChain builds an account with devices a (genesis) and b, a username, a profile, a social link, a third
// device c that is then revoked.
func fullChain(t *testing.T) (c *Chain, a, b, cdev *DeviceKeys) {
	t.Helper()
	a, b, cdev = testDevice(t, "a"), testDevice(t, "b"), testDevice(t, "c")
	c, err := NewAccount(a, t0)
	if err != nil {
		t.Fatal(err)
	}
	acct := c.AccountID()
	steps := []struct {
		signer *DeviceKeys
		body   Body
	}{
		{a, &AddDevice{Cert: NewDeviceCert(b, acct, t0.Add(time.Minute))}},
		{b, &SetUsername{Username: "alice"}},
		{a, &SetProfile{Profile: Profile{Name: "Alice", Description: "hi", PictureRef: "blob:abc", PictureHash: bytes.Repeat([]byte{1}, 32)}}},
		{b, &LinkSocial{Link: SocialLink{Provider: "github", Subject: "12345", Attestation: []byte("att")}}},
		{a, &AddDevice{Cert: NewDeviceCert(cdev, acct, t0.Add(2*time.Minute))}},
		{b, &RevokeDevice{Device: cdev.ID()}},
	}
	for i, s := range steps {
		if _, err := c.Append(s.signer, s.body, t0.Add(time.Duration(i+1)*time.Minute)); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	return c, a, b, cdev
}

// forge re-signs a statement with arbitrary fields (as an attacker holding signer's key could).
func forge(t *testing.T, signer *DeviceKeys, s *Statement) *Statement {
	t.Helper()
	tr, err := s.transcript()
	if err != nil {
		t.Fatal(err)
	}
	s.Sig = signer.sign(s.Kind.context(), tr)
	s.raw = append(tr, s.Sig...)
	return s
}

// withStatement returns a chain made of c's first n statements plus s.
func withStatement(c *Chain, n int, s *Statement) *Chain {
	stmts := append(c.Statements()[:n:n], s)
	return &Chain{stmts: stmts}
}

func requireChainError(t *testing.T, err error, index int, reason ChainErrorReason) {
	t.Helper()
	var ce *ChainError
	if !errors.As(err, &ce) {
		t.Fatalf("got %v, want a ChainError", err)
	}
	if ce.Index != index || ce.Reason != reason {
		t.Fatalf("got statement %d %q, want statement %d %q (%v)", ce.Index, ce.Reason, index, reason, err)
	}
}

func TestReplayComputesAccountState(t *testing.T) {
	c, a, b, cdev := fullChain(t)
	st, err := Replay(c)
	if err != nil {
		t.Fatal(err)
	}
	if st.Account != c.AccountID() || st.Seq != 6 || st.Head != c.Head() {
		t.Fatalf("account %s seq %d", st.Account, st.Seq)
	}
	if len(st.Devices) != 2 || st.Devices[0].ID != a.ID() || st.Devices[1].ID != b.ID() || st.Devices[1].AddedAt != 1 {
		t.Fatalf("devices %+v", st.Devices)
	}
	if !st.Devices[1].Public.Equal(b.Public()) {
		t.Fatal("device b's keys differ")
	}
	if len(st.Revoked) != 1 || st.Revoked[0].ID != cdev.ID() || st.Revoked[0].RevokedAt != 6 || st.Revoked[0].AddedAt != 5 {
		t.Fatalf("revoked %+v", st.Revoked)
	}
	if st.Username != "alice" || st.Profile.Name != "Alice" || len(st.Social) != 1 || st.Social[0].Subject != "12345" {
		t.Fatalf("state %+v", st)
	}
	if _, err := st.SenderKey(a.ID()); err != nil {
		t.Fatal(err)
	}
	_, err = st.SenderKey(cdev.ID())
	requireIs(t, err, ErrRevoked)
	_, err = st.SenderKey(testDevice(t, "x").ID())
	requireIs(t, err, ErrUnknownSender)
}

func TestChainEncodeDecodeRoundTrip(t *testing.T) {
	c, _, _, _ := fullChain(t)
	enc := c.Encode()
	d, err := DecodeChain(enc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(d.Encode(), enc) || d.AccountID() != c.AccountID() || Compare(c, d) != Same {
		t.Fatal("round trip differs")
	}
	if _, err := Replay(d); err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeChain(append(bytes.Clone(enc), 0)); !isTyped(err) {
		t.Fatalf("trailing byte: %v", err)
	}
	if _, err := DecodeChain(enc[:len(enc)-1]); !isTyped(err) {
		t.Fatalf("truncated: %v", err)
	}
}

func TestChainEveryByteFlipRefused(t *testing.T) {
	// The chain framing and the genesis statement, on a short chain.
	a := testDevice(t, "a")
	short, err := NewAccount(a, t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := short.Append(a, &SetUsername{Username: "al"}, t0); err != nil {
		t.Fatal(err)
	}
	flipEachByte(t, "chain", short.Encode(), func(p []byte) error {
		d, err := DecodeChain(p)
		if err != nil {
			return err
		}
		_, err = Replay(d)
		return err
	})
	// Every other statement layout, in place in a full chain.
	c, _, _, _ := fullChain(t)
	stmts := c.Statements()
	for _, idx := range []int{1, 2, 3, 4, 6} {
		s := stmts[idx]
		// Replay the prefix once; each variant is then checked as the next statement, exactly as Replay does.
		prefix, err := replay(stmts[:idx])
		if err != nil {
			t.Fatal(err)
		}
		flipEachByte(t, "statement "+s.Kind.String(), s.Encode(), func(p []byte) error {
			d, err := DecodeStatement(p)
			if err != nil {
				return err
			}
			if err := prefix.clone().apply(idx, d); err != nil {
				return err
			}
			return nil
		})
	}
}

func TestReplayNamesForgedSignature(t *testing.T) {
	c, a, _, _ := fullChain(t)
	mallory := testDevice(t, "mallory")
	s := forge(t, mallory, &Statement{Kind: KindSetUsername, Seq: 7, Prev: c.Head(), Time: t0.Add(time.Hour), Signer: a.ID(), Body: &SetUsername{Username: "mallory"}})
	_, err := Replay(withStatement(c, 7, s))
	requireChainError(t, err, 7, ReasonBadSignature)
	requireIs(t, err, ErrBadSignature)
}

func TestReplayNamesRevokedSigner(t *testing.T) {
	c, _, _, cdev := fullChain(t)
	s := forge(t, cdev, &Statement{Kind: KindSetUsername, Seq: 7, Prev: c.Head(), Time: t0.Add(time.Hour), Signer: cdev.ID(), Body: &SetUsername{Username: "evil"}})
	_, err := Replay(withStatement(c, 7, s))
	requireChainError(t, err, 7, ReasonSignerRevoked)
	requireIs(t, err, ErrRevoked)
	// The builder refuses too.
	if _, err := c.Append(cdev, &SetUsername{Username: "evil"}, t0.Add(time.Hour)); err == nil {
		t.Fatal("revoked device appended")
	}
}

func TestReplayNamesUnknownSigner(t *testing.T) {
	c, _, _, _ := fullChain(t)
	m := testDevice(t, "mallory")
	s := forge(t, m, &Statement{Kind: KindSetUsername, Seq: 7, Prev: c.Head(), Time: t0.Add(time.Hour), Signer: m.ID(), Body: &SetUsername{Username: "evil"}})
	_, err := Replay(withStatement(c, 7, s))
	requireChainError(t, err, 7, ReasonSignerNotCurrent)
}

func TestReplayNamesBrokenLink(t *testing.T) {
	c, a, _, _ := fullChain(t)
	prev := c.Statements()[5].Hash() // skips statement 6
	s := forge(t, a, &Statement{Kind: KindSetUsername, Seq: 7, Prev: prev, Time: t0.Add(time.Hour), Signer: a.ID(), Body: &SetUsername{Username: "bob"}})
	_, err := Replay(withStatement(c, 7, s))
	requireChainError(t, err, 7, ReasonBrokenLink)
	// Dropping a statement from the middle breaks the link of the next one.
	stmts := c.Statements()
	_, err = Replay(&Chain{stmts: append(stmts[:3:3], stmts[4:]...)})
	requireChainError(t, err, 3, ReasonBadSequence)
}

func TestReplayNamesWrongSequence(t *testing.T) {
	c, a, _, _ := fullChain(t)
	for _, seq := range []uint64{6, 8, 0} {
		s := forge(t, a, &Statement{Kind: KindSetUsername, Seq: seq, Prev: c.Head(), Time: t0.Add(time.Hour), Signer: a.ID(), Body: &SetUsername{Username: "bob"}})
		_, err := Replay(withStatement(c, 7, s))
		requireChainError(t, err, 7, ReasonBadSequence)
	}
}

func TestReplayNamesBadGenesisAndBadDeviceCert(t *testing.T) {
	a, b := testDevice(t, "a"), testDevice(t, "b")
	// Genesis signed by a device other than the one it adds.
	g := forge(t, b, &Statement{Kind: KindGenesis, Time: t0, Signer: b.ID(), Body: &Genesis{Device: a.Public()}})
	_, err := Replay(&Chain{stmts: []*Statement{g}})
	requireChainError(t, err, 0, ReasonBadGenesis)
	// A second genesis later in the chain.
	c, err := NewAccount(a, t0)
	if err != nil {
		t.Fatal(err)
	}
	g2 := forge(t, a, &Statement{Kind: KindGenesis, Seq: 1, Prev: c.Head(), Time: t0, Signer: a.ID(), Body: &Genesis{Device: a.Public()}})
	_, err = Replay(withStatement(c, 1, g2))
	requireChainError(t, err, 1, ReasonBadGenesis)
	// A device certificate made for another account cannot be replayed into this one.
	other, err := NewAccount(b, t0)
	if err != nil {
		t.Fatal(err)
	}
	nd := testDevice(t, "new")
	_, err = c.Append(a, &AddDevice{Cert: NewDeviceCert(nd, other.AccountID(), t0)}, t0)
	requireChainError(t, err, 1, ReasonBadDeviceCert)
	// A certificate whose keys were swapped for someone else's (adding a key one does not hold).
	cert := NewDeviceCert(nd, c.AccountID(), t0)
	cert.Device = b.Public()
	_, err = c.Append(a, &AddDevice{Cert: cert}, t0)
	requireChainError(t, err, 1, ReasonBadDeviceCert)
	// The last device cannot be revoked.
	_, err = c.Append(a, &RevokeDevice{Device: a.ID()}, t0)
	requireChainError(t, err, 1, ReasonLastDevice)
	if c.Len() != 1 {
		t.Fatalf("refused appends changed the chain: %d statements", c.Len())
	}
}

func TestCompareDetectsExtensionRollbackAndFork(t *testing.T) {
	c, a, b, _ := fullChain(t)
	d, err := DecodeChain(c.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if Compare(c, d) != Same {
		t.Fatal("identical chains not Same")
	}
	if _, err := d.Append(a, &SetUsername{Username: "alice2"}, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := Compare(c, d); got != Extends {
		t.Fatalf("longer chain: %s", got)
	}
	if got := Compare(d, c); got != RolledBack {
		t.Fatalf("shorter chain: %s", got)
	}
	e, err := DecodeChain(c.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Append(b, &SetUsername{Username: "alice3"}, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := Compare(d, e); got != Forked || ForkIndex(d, e) != 7 {
		t.Fatalf("diverging chains: %s at %d", got, ForkIndex(d, e))
	}
	other, err := NewAccount(testDevice(t, "z"), t0)
	if err != nil {
		t.Fatal(err)
	}
	if got := Compare(c, other); got != Forked {
		t.Fatalf("chains of different accounts: %s", got)
	}
}

func TestAppendRefusesInvalidBodies(t *testing.T) {
	a := testDevice(t, "a")
	c, err := NewAccount(a, t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, body := range []Body{
		&SetUsername{Username: "Alice"}, &SetUsername{Username: ""}, &SetUsername{Username: "-x"},
		&SetProfile{Profile: Profile{PictureHash: []byte{1}}}, &LinkSocial{Link: SocialLink{Provider: "Git Hub", Subject: "1"}},
		&RevokeDevice{Device: testDevice(t, "q").ID()}, &Genesis{Device: a.Public()}, nil,
	} {
		if _, err := c.Append(a, body, t0); !isTyped(err) {
			t.Fatalf("append %#v: %v", body, err)
		}
	}
	if c.Len() != 1 {
		t.Fatal("refused append changed the chain")
	}
}
