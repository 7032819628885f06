package e2ee

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/iagon/gridchat/e2ee/internal/kdfchain"
)

var (
	convA = ConversationID{0xaa, 1}
	convB = ConversationID{0xbb, 2}
)

// party is a test conversation: alice's devices a1, a2 and bob's b1, b2.
type party struct {
	a1, a2, b1, b2 *DeviceKeys
}

func newParty(t testing.TB) party {
	return party{testDevice(t, "a1"), testDevice(t, "a2"), testDevice(t, "b1"), testDevice(t, "b2")}
}

func recipientOf(t testing.TB, dk *DeviceKeys) RecipientKey {
	t.Helper()
	rk, err := NewRecipientKey(dk.Public(), dk.MessagingKey(), t0)
	if err != nil {
		t.Fatal(err)
	}
	return rk
}

// distribute makes a session for conv/epoch from sender to the devices and returns it and its distribution.
func distribute(t testing.TB, conv ConversationID, epoch uint64, sender *DeviceKeys, to ...*DeviceKeys) (*Session, *KeyDistribution) {
	t.Helper()
	s, err := newSession(newDetRand(fmt.Sprintf("session/%x/%d", conv[:2], epoch)), conv, epoch)
	if err != nil {
		t.Fatal(err)
	}
	var rks []RecipientKey
	for _, d := range to {
		rks = append(rks, recipientOf(t, d))
	}
	kd, err := Distribute(sender, s, rks)
	if err != nil {
		t.Fatal(err)
	}
	return s, kd
}

func TestKeyDistributionRoundTripReachesEveryRecipient(t *testing.T) {
	p := newParty(t)
	sess, kd := distribute(t, convA, 1, p.a1, p.a1, p.a2, p.b1, p.b2)
	if got := len(kd.Entries); got != 3 {
		t.Fatalf("%d entries, want 3 (sender skipped)", got)
	}
	enc := kd.Encode()
	back, err := DecodeKeyDistribution(enc)
	if err != nil || !bytes.Equal(back.Encode(), enc) {
		t.Fatalf("round trip: %v", err)
	}
	snd, err := sess.Sender(p.a1)
	if err != nil {
		t.Fatal(err)
	}
	m, err := snd.Seal([]byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	for _, me := range []*DeviceKeys{p.a2, p.b1, p.b2} {
		s, err := Open(back, p.a1.Public(), me)
		if err != nil {
			t.Fatalf("%s: %v", me.ID(), err)
		}
		if s.Conversation() != convA || s.Epoch() != 1 || len(s.Members()) != 4 {
			t.Fatal("session metadata")
		}
		r, err := s.Receiver(p.a1.Public(), ReceiverOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pt, err := r.Open(m)
		if err != nil || string(pt) != "hello" {
			t.Fatalf("open: %q %v", pt, err)
		}
	}
	_, err = Distribute(p.a1, sess, []RecipientKey{recipientOf(t, p.b1)})
	requireIs(t, err, ErrSessionUsed)
}

func TestKeyDistributionEveryByteFlipRefused(t *testing.T) {
	p := newParty(t)
	_, kd := distribute(t, convA, 1, p.a1, p.b1, p.b2)
	flipEachByte(t, "key distribution", kd.Encode(), func(b []byte) error {
		kd, err := DecodeKeyDistribution(b)
		if err != nil {
			return err
		}
		_, err = Open(kd, p.a1.Public(), p.b1)
		return err
	})
}

func TestKeyDistributionRefusesKeySubstitution(t *testing.T) {
	p := newParty(t)
	_, kd := distribute(t, convA, 1, p.a1, p.b1, p.b2)
	// Verifying against another device's key.
	_, err := Open(kd, p.a2.Public(), p.b1)
	requireIs(t, err, ErrUnknownSender)
	// A recipient key whose messaging key is someone else's is refused before anything is sealed to it.
	forged := p.b1.MessagingKey()
	forged.Key = p.b2.MessagingKey().Key
	_, err = NewRecipientKey(p.b1.Public(), forged, t0)
	requireIs(t, err, ErrBadSignature)
	// An entry relabelled with another messaging key ID (re-signed by the sender) is not opened with it.
	kd2, _ := DecodeKeyDistribution(kd.Encode())
	for i := range kd2.Entries {
		kd2.Entries[i].KeyID = p.b2.MessagingKey().KeyID()
	}
	tr, _ := kd2.transcript()
	kd2.Sig = p.a1.sign(CtxKeyDist, tr)
	_, err = Open(kd2, p.a1.Public(), p.b1)
	requireIs(t, err, ErrUnknownKey)
}

// resign lets a test act as a malicious but legitimate member that signs whatever it likes.
func resign(t *testing.T, kd *KeyDistribution, as *DeviceKeys) {
	t.Helper()
	kd.Sender = as.ID()
	tr, err := kd.transcript()
	if err != nil {
		t.Fatal(err)
	}
	kd.Sig = as.sign(CtxKeyDist, tr)
}

func TestKeyDistributionCannotBeMoved(t *testing.T) {
	p := newParty(t)
	_, kd := distribute(t, convA, 1, p.a1, p.b1, p.b2)
	fresh := func() *KeyDistribution {
		k, err := DecodeKeyDistribution(kd.Encode())
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	// Relabelled without re-signing: the signature covers conversation, epoch, sender and recipients.
	for name, mutate := range map[string]func(*KeyDistribution){
		"conversation": func(k *KeyDistribution) { k.Conversation = convB },
		"epoch":        func(k *KeyDistribution) { k.Epoch = 2 },
		"recipient": func(k *KeyDistribution) {
			k.Entries[0].Recipient, k.Entries[1].Recipient = k.Entries[1].Recipient, k.Entries[0].Recipient
		},
		"ciphertext": func(k *KeyDistribution) {
			k.Entries[0].Ciphertext, k.Entries[1].Ciphertext = k.Entries[1].Ciphertext, k.Entries[0].Ciphertext
		},
	} {
		k := fresh()
		mutate(k)
		_, err := Open(k, p.a1.Public(), p.b1)
		if !errors.Is(err, ErrBadSignature) {
			t.Fatalf("%s moved: %v", name, err)
		}
	}
	// Re-signed by a member who wants to move the sealed key elsewhere: the HPKE info binds conversation,
	// epoch, sender and recipient, so decryption fails.
	for name, mutate := range map[string]func(*KeyDistribution) *DeviceKeys{
		"conversation": func(k *KeyDistribution) *DeviceKeys { k.Conversation = convB; return p.a1 },
		"epoch":        func(k *KeyDistribution) *DeviceKeys { k.Epoch = 7; return p.a1 },
		"sender":       func(k *KeyDistribution) *DeviceKeys { return p.b2 },
		"recipient": func(k *KeyDistribution) *DeviceKeys {
			// b2's entry handed to b1 (b1's own entry dropped).
			e := k.Entries[0]
			if e.Recipient == p.b1.ID() {
				e = k.Entries[1]
			}
			e.Recipient, e.KeyID = p.b1.ID(), p.b1.MessagingKey().KeyID()
			k.Entries = []KeyEntry{e}
			return p.a1
		},
	} {
		k := fresh()
		signer := mutate(k)
		resign(t, k, signer)
		_, err := Open(k, signer.Public(), p.b1)
		if !errors.Is(err, ErrDecrypt) {
			t.Fatalf("%s moved and re-signed: %v", name, err)
		}
	}
	_, err := Open(fresh(), p.a1.Public(), testDevice(t, "stranger"))
	requireIs(t, err, ErrNotRecipient)
}

func TestKeyDistributionFromRevokedOrUnknownSenderRefused(t *testing.T) {
	p := newParty(t)
	chain, err := NewAccount(p.a1, t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chain.Append(p.a1, &AddDevice{Cert: NewDeviceCert(p.a2, chain.AccountID(), t0)}, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := chain.Append(p.a1, &RevokeDevice{Device: p.a2.ID()}, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	alice, err := Replay(chain)
	if err != nil {
		t.Fatal(err)
	}
	_, kd := distribute(t, convA, 1, p.a2, p.b1)
	_, err = alice.SenderKey(kd.Sender)
	requireIs(t, err, ErrRevoked)
	_, kd = distribute(t, convA, 1, p.b2, p.b1)
	_, err = alice.SenderKey(kd.Sender)
	requireIs(t, err, ErrUnknownSender)
	// And a distribution checked against the key the directory gives for the claimed sender fails if the
	// claimed sender is not who signed.
	_, err = Open(kd, p.a1.Public(), p.b1)
	requireIs(t, err, ErrUnknownSender)
}

func TestKeyDistributionToRotatedKeyOpensUntilPruned(t *testing.T) {
	p := newParty(t)
	_, kd := distribute(t, convA, 1, p.a1, p.b1)
	if _, err := p.b1.rotate(newDetRand("rot"), t0.Add(time.Hour), DefaultMessagingKeyLifetime); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(kd, p.a1.Public(), p.b1); err != nil {
		t.Fatalf("open after rotation: %v", err)
	}
	p.b1.PruneMessagingKeys(t0.Add(60*24*time.Hour), time.Hour)
	_, err := Open(kd, p.a1.Public(), p.b1)
	requireIs(t, err, ErrUnknownKey)
}

// pair returns a sender (a1) and a receiver on b1 of a fresh session of conv/epoch.
func pair(t testing.TB, p party, conv ConversationID, epoch uint64, opts ReceiverOptions) (*Sender, *Receiver) {
	t.Helper()
	sess, kd := distribute(t, conv, epoch, p.a1, p.b1, p.b2)
	snd, err := sess.Sender(p.a1)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := Open(kd, p.a1.Public(), p.b1)
	if err != nil {
		t.Fatal(err)
	}
	rcv, err := rs.Receiver(p.a1.Public(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return snd, rcv
}

func seal(t testing.TB, s *Sender, n int) []*Message {
	t.Helper()
	out := make([]*Message, n)
	for i := range out {
		m, err := s.Seal([]byte(fmt.Sprintf("message %d", i)))
		if err != nil {
			t.Fatal(err)
		}
		out[i] = m
	}
	return out
}

func TestMessageRoundTripAndEncoding(t *testing.T) {
	p := newParty(t)
	snd, rcv := pair(t, p, convA, 1, ReceiverOptions{})
	for i, m := range seal(t, snd, 5) {
		enc := m.Encode()
		back, err := DecodeMessage(enc)
		if err != nil || !bytes.Equal(back.Encode(), enc) {
			t.Fatalf("round trip: %v", err)
		}
		pt, err := rcv.Open(back)
		if err != nil || string(pt) != fmt.Sprintf("message %d", i) {
			t.Fatalf("open %d: %q %v", i, pt, err)
		}
	}
	if snd.Counter() != 5 || rcv.Skipped() != 0 {
		t.Fatalf("counter %d skipped %d", snd.Counter(), rcv.Skipped())
	}
	// Sender state survives encoding and continues the chain.
	snd2, err := DecodeSender(snd.Encode(), p.a1)
	if err != nil {
		t.Fatal(err)
	}
	m := seal(t, snd2, 1)[0]
	if pt, err := rcv.Open(m); err != nil || string(pt) != "message 0" || m.Counter != 5 {
		t.Fatalf("after restore: %q %v", pt, err)
	}
	if _, err := DecodeSender(snd.Encode(), p.a2); !errors.Is(err, ErrUnknownSender) {
		t.Fatalf("sender state restored for another device: %v", err)
	}
}

func TestMessageEveryByteFlipRefused(t *testing.T) {
	p := newParty(t)
	snd, rcv := pair(t, p, convA, 1, ReceiverOptions{})
	state := rcv.Encode()
	m := seal(t, snd, 1)[0]
	flipEachByte(t, "message", m.Encode(), func(b []byte) error {
		r, err := DecodeReceiver(state)
		if err != nil {
			t.Fatal(err)
		}
		m, err := DecodeMessage(b)
		if err != nil {
			return err
		}
		_, err = r.Open(m)
		return err
	})
}

func TestMessageCannotBeMoved(t *testing.T) {
	p := newParty(t)
	snd, rcv := pair(t, p, convA, 1, ReceiverOptions{})
	_, rcvB := pair(t, p, convB, 1, ReceiverOptions{})
	_, rcv2 := pair(t, p, convA, 2, ReceiverOptions{})
	m := seal(t, snd, 2)
	_, err := rcvB.Open(m[0])
	requireIs(t, err, ErrWrongConversation)
	_, err = rcv2.Open(m[0])
	requireIs(t, err, ErrWrongConversation)
	// Relabelled without re-signing.
	for name, mutate := range map[string]func(*Message){
		"conversation": func(x *Message) { x.Conversation = convB },
		"epoch":        func(x *Message) { x.Epoch = 2 },
		"counter":      func(x *Message) { x.Counter = 1 },
		"sender":       func(x *Message) { x.Sender = p.b2.ID() },
	} {
		x, _ := DecodeMessage(m[0].Encode())
		mutate(x)
		target := map[string]*Receiver{"conversation": rcvB, "epoch": rcv2, "counter": rcv, "sender": rcv}[name]
		if _, err := target.Open(x); err == nil || !isTyped(err) {
			t.Fatalf("%s moved: %v", name, err)
		}
	}
	// Relabelled and re-signed by the sender itself (the AEAD's associated data still binds the original).
	before := rcv.Encode()
	x, _ := DecodeMessage(m[0].Encode())
	x.Counter = 1
	tr, _ := x.transcript()
	x.Sig = p.a1.sign(CtxMessage, tr)
	_, err = rcv.Open(x)
	requireIs(t, err, ErrDecrypt)
	if !bytes.Equal(rcv.Encode(), before) {
		t.Fatal("failed open changed the receiver state")
	}
	// Moved to another sender's chain by a member who re-signs it as its own.
	sess, kd := distribute(t, convA, 3, p.a1, p.b1, p.b2)
	sA, _ := sess.Sender(p.a1)
	rs, _ := Open(kd, p.a1.Public(), p.b1)
	rB2, err := rs.Receiver(p.b2.Public(), ReceiverOptions{})
	if err != nil {
		t.Fatal(err)
	}
	y := seal(t, sA, 1)[0]
	y.Sender = p.b2.ID()
	tr, _ = y.transcript()
	y.Sig = p.b2.sign(CtxMessage, tr)
	_, err = rB2.Open(y)
	requireIs(t, err, ErrDecrypt)
	// Verified against the wrong sender key.
	rs2, _ := Open(kd, p.a1.Public(), p.b2)
	wrong, err := rs2.Receiver(p.b1.Public(), ReceiverOptions{})
	if err != nil {
		t.Fatal(err)
	}
	z := seal(t, sA, 1)[0]
	_, err = wrong.Open(z)
	requireIs(t, err, ErrUnknownSender)
	// A device that is not a member of the epoch has no chain.
	_, err = rs.Receiver(testDevice(t, "stranger").Public(), ReceiverOptions{})
	requireIs(t, err, ErrSessionUsed)
}

func TestOutOfOrderAndMissingMessagesWithinWindow(t *testing.T) {
	p := newParty(t)
	snd, rcv := pair(t, p, convA, 1, ReceiverOptions{})
	msgs := seal(t, snd, 50)
	order := rand.New(rand.NewPCG(1, 2)).Perm(50)
	lost := map[int]bool{order[0]: true, order[1]: true, order[2]: true}
	for _, i := range order {
		if lost[i] {
			continue
		}
		pt, err := rcv.Open(msgs[i])
		if err != nil || string(pt) != fmt.Sprintf("message %d", i) {
			t.Fatalf("message %d: %q %v", i, pt, err)
		}
	}
	if got := rcv.Skipped(); got != len(lost) {
		t.Fatalf("%d skipped keys kept, want %d (only the lost messages')", got, len(lost))
	}
	for i := range msgs {
		if lost[i] {
			continue
		}
		_, err := rcv.Open(msgs[i])
		requireIs(t, err, ErrReplay)
	}
	for i := range lost {
		if _, err := rcv.Open(msgs[i]); err != nil {
			t.Fatalf("late message %d: %v", i, err)
		}
	}
	if rcv.Skipped() != 0 {
		t.Fatal("keys kept after every message was opened")
	}
}

func TestWindowRefusesJumpsAndEvictsOldKeys(t *testing.T) {
	p := newParty(t)
	snd, rcv := pair(t, p, convA, 1, ReceiverOptions{MaxSkip: 3})
	msgs := seal(t, snd, 12)
	_, err := rcv.Open(msgs[4])
	requireIs(t, err, ErrWindow)
	if _, err := rcv.Open(msgs[3]); err != nil { // skips 0,1,2
		t.Fatal(err)
	}
	if _, err := rcv.Open(msgs[7]); err != nil { // skips 4,5,6: 0,1,2 evicted
		t.Fatal(err)
	}
	if rcv.Skipped() != 3 {
		t.Fatalf("%d keys kept, window 3", rcv.Skipped())
	}
	_, err = rcv.Open(msgs[1])
	requireIs(t, err, ErrTooOld)
	if _, err := rcv.Open(msgs[5]); err != nil {
		t.Fatal(err)
	}
	st, err := DecodeReceiver(rcv.Encode())
	if err != nil || !bytes.Equal(st.Encode(), rcv.Encode()) {
		t.Fatalf("receiver state round trip: %v", err)
	}
	if _, err := st.Open(msgs[4]); err != nil {
		t.Fatalf("restored receiver: %v", err)
	}
	_, err = st.Open(msgs[5])
	requireIs(t, err, ErrReplay)
}

func TestForwardSecrecyWithinEpoch(t *testing.T) {
	p := newParty(t)
	root, err := newSession(newDetRand(fmt.Sprintf("session/%x/%d", convA[:2], 1)), convA, 1)
	if err != nil {
		t.Fatal(err)
	}
	rootKey := bytes.Clone(root.root)
	snd, rcv := pair(t, p, convA, 1, ReceiverOptions{})
	const n = 20
	msgs := seal(t, snd, n+1)
	for i := 0; i <= n; i++ {
		if _, err := rcv.Open(msgs[i]); err != nil {
			t.Fatal(err)
		}
	}
	captured := rcv.Encode()
	// 1. The captured state cannot open any message up to N.
	for i := 0; i <= n; i++ {
		r, err := DecodeReceiver(captured)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Open(msgs[i]); err == nil {
			t.Fatalf("captured state opened message %d", i)
		}
	}
	// 2. It holds none of the keys that could: not the session key, not any earlier chain or message key.
	ck, err := kdfchain.Start(rootKey, chainContext(convA, 1, p.a1.ID()))
	if err != nil {
		t.Fatal(err)
	}
	secrets := [][]byte{rootKey, bytes.Clone(ck[:])}
	for i := uint64(0); i <= n; i++ {
		next, key, _, err := kdfchain.Step(&ck, i)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, bytes.Clone(key[:]))
		ck = next
		if i < n {
			secrets = append(secrets, bytes.Clone(ck[:]))
		}
	}
	for i, s := range secrets {
		if bytes.Contains(captured, s) || bytes.Contains(snd.Encode(), s) {
			t.Fatalf("captured state holds past secret %d", i)
		}
	}
	// 3. The next message still opens from the captured state (it is the live state, not a dead one).
	r, _ := DecodeReceiver(captured)
	m := seal(t, snd, 1)[0]
	if _, err := r.Open(m); err != nil {
		t.Fatal(err)
	}
}

func TestSessionStateHoldsNoClaimedChainOrSessionKey(t *testing.T) {
	p := newParty(t)
	sess, kd := distribute(t, convA, 1, p.a1, p.b1, p.b2)
	if _, err := sess.Encode(); err != nil {
		t.Fatal(err)
	}
	rs, err := Open(kd, p.a1.Public(), p.b1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rs.Receiver(p.a1.Public(), ReceiverOptions{}); err != nil {
		t.Fatal(err)
	}
	enc, err := rs.Encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeSession(enc)
	if err != nil {
		t.Fatal(err)
	}
	if b2, _ := back.Encode(); !bytes.Equal(b2, enc) {
		t.Fatal("session state round trip differs")
	}
	_, err = back.Receiver(p.a1.Public(), ReceiverOptions{})
	requireIs(t, err, ErrSessionUsed)
	if _, err := back.Receiver(p.b2.Public(), ReceiverOptions{}); err != nil {
		t.Fatalf("unclaimed chain lost: %v", err)
	}
	unsent, _ := NewSession(convA, 9)
	_, err = unsent.Encode()
	requireIs(t, err, ErrSessionUsed)
}

func TestRenewalPolicy(t *testing.T) {
	pol := DefaultRenewalPolicy()
	members := []DeviceID{{1}, {2}}
	u := SessionUsage{Started: t0, Messages: 10, Members: members}
	cases := []struct {
		name    string
		u       SessionUsage
		current []DeviceID
		now     time.Time
		want    RenewalReason
	}{
		{"fresh", u, []DeviceID{{2}, {1}}, t0.Add(time.Hour), RenewNotDue},
		{"count", SessionUsage{Started: t0, Messages: 100, Members: members}, members, t0, RenewCount},
		{"age", u, members, t0.Add(7 * 24 * time.Hour), RenewAge},
		{"device added", u, []DeviceID{{1}, {2}, {3}}, t0, RenewMembership},
		{"device removed", u, []DeviceID{{1}}, t0, RenewMembership},
		{"device replaced", u, []DeviceID{{1}, {3}}, t0, RenewMembership},
	}
	for _, c := range cases {
		if got := pol.Due(c.u, c.current, c.now); got != c.want {
			t.Errorf("%s: got %d, want %d", c.name, got, c.want)
		}
	}
}

func TestMessageFromRevokedOrUnknownSenderRefused(t *testing.T) {
	p := newParty(t)
	chain, err := NewAccount(p.a1, t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chain.Append(p.a1, &AddDevice{Cert: NewDeviceCert(p.a2, chain.AccountID(), t0)}, t0); err != nil {
		t.Fatal(err)
	}
	sess, kd := distribute(t, convA, 1, p.a2, p.a1, p.b1)
	snd, err := sess.Sender(p.a2)
	if err != nil {
		t.Fatal(err)
	}
	m := seal(t, snd, 1)[0]
	rs, err := Open(kd, p.a2.Public(), p.b1)
	if err != nil {
		t.Fatal(err)
	}
	// The receiver resolves the sender through the account's replayed chain: after a2 is revoked, it gets
	// no key for a2 and cannot build a receiver for its messages.
	if _, err := chain.Append(p.a1, &RevokeDevice{Device: p.a2.ID()}, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	alice, err := Replay(chain)
	if err != nil {
		t.Fatal(err)
	}
	_, err = alice.SenderKey(m.Sender)
	requireIs(t, err, ErrRevoked)
	// A device outside the account is unknown, and a message claiming another sender is refused by the
	// receiver of the real one.
	_, err = alice.SenderKey(p.b2.ID())
	requireIs(t, err, ErrUnknownSender)
	rcv, err := rs.Receiver(p.a1.Public(), ReceiverOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = rcv.Open(m)
	requireIs(t, err, ErrUnknownSender)
}
