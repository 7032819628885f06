package e2ee

import (
	"bytes"
	"crypto/ed25519"
	"testing"
	"time"
)

func TestDeviceIDIsHashOfSigningKeyAndParses(t *testing.T) {
	a, b := testDevice(t, "a"), testDevice(t, "b")
	if a.ID() == b.ID() {
		t.Fatal("two devices share an ID")
	}
	if a.ID() != a.Public().ID() {
		t.Fatal("ID differs from the public key's ID")
	}
	id, err := ParseDeviceID(a.ID().String())
	if err != nil || id != a.ID() {
		t.Fatalf("parse %s: %v %v", a.ID(), id, err)
	}
	for _, bad := range []string{"", "00", a.ID().String() + "00", "zz" + a.ID().String()[2:]} {
		if _, err := ParseDeviceID(bad); !isTyped(err) {
			t.Fatalf("ParseDeviceID(%q) = %v", bad, err)
		}
	}
	// The ID binds the signing key: another key never maps to the same ID.
	pub := a.Public()
	pub.Signing = b.Public().Signing
	if pub.ID() == a.ID() {
		t.Fatal("device ID not bound to signing key")
	}
}

func TestDevicePublicRoundTripAndStrictDecode(t *testing.T) {
	p := testDevice(t, "a").Public()
	enc := p.Encode()
	q, err := DecodeDevicePublic(enc)
	if err != nil || !q.Equal(p) || !bytes.Equal(q.Encode(), enc) {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := DecodeDevicePublic(append(enc, 0)); !isTyped(err) {
		t.Fatalf("trailing byte: %v", err)
	}
	if _, err := DecodeDevicePublic(enc[:len(enc)-1]); !isTyped(err) {
		t.Fatalf("truncated: %v", err)
	}
	bad := bytes.Clone(enc)
	bad[1] = 2
	requireIs(t, func() error { _, err := DecodeDevicePublic(bad); return err }(), ErrUnsupported)
}

func TestDeviceKeysRoundTripKeepsEveryKey(t *testing.T) {
	dk := testDevice(t, "a")
	if _, err := dk.rotate(newDetRand("rot"), t0.Add(time.Hour), DefaultMessagingKeyLifetime); err != nil {
		t.Fatal(err)
	}
	enc := dk.Encode()
	back, err := DecodeDeviceKeys(enc)
	if err != nil {
		t.Fatal(err)
	}
	if back.ID() != dk.ID() || !back.Public().Equal(dk.Public()) || !bytes.Equal(back.Encode(), enc) {
		t.Fatal("decoded keys differ")
	}
	if !bytes.Equal(back.MessagingKey().Encode(), dk.MessagingKey().Encode()) {
		t.Fatal("current messaging key differs")
	}
	for _, trunc := range []int{1, 10, len(enc) - 1} {
		if _, err := DecodeDeviceKeys(enc[:trunc]); !isTyped(err) {
			t.Fatalf("truncated at %d: %v", trunc, err)
		}
	}
	if _, err := DecodeDeviceKeys(append(bytes.Clone(enc), 0)); !isTyped(err) {
		t.Fatalf("trailing byte: %v", err)
	}
}

func TestSealPrivateRoundTripAndEveryByteFlipRefused(t *testing.T) {
	dk := testDevice(t, "a")
	key := bytes.Repeat([]byte{7}, 32)
	blob, err := sealPrivate(newDetRand("seal"), key, dk)
	if err != nil {
		t.Fatal(err)
	}
	back, err := OpenPrivate(key, blob)
	if err != nil || back.ID() != dk.ID() {
		t.Fatalf("open: %v", err)
	}
	if bytes.Contains(blob, dk.signing.Seed()) {
		t.Fatal("sealed blob contains the signing seed in clear")
	}
	requireIs(t, func() error { _, err := OpenPrivate(bytes.Repeat([]byte{8}, 32), blob); return err }(), ErrDecrypt)
	flipEachByte(t, "sealed private keys", blob, func(b []byte) error { _, err := OpenPrivate(key, b); return err })
}

func TestSignedMessagingKeyVerifiesAndRefusesTamperingAndSubstitution(t *testing.T) {
	a, b := testDevice(t, "a"), testDevice(t, "b")
	k := a.MessagingKey()
	enc := k.Encode()
	flipEachByte(t, "signed messaging key", enc, func(p []byte) error {
		k2, err := DecodeSignedMessagingKey(p)
		if err != nil {
			return err
		}
		return k2.Verify(a.Public(), t0)
	})
	requireIs(t, k.Verify(b.Public(), t0), ErrUnknownSender)
	// Substitute b's messaging key into a's signed record: the signature no longer matches.
	sub := k.clone()
	sub.Key = b.MessagingKey().Key
	requireIs(t, sub.Verify(a.Public(), t0), ErrBadSignature)
	requireIs(t, k.Verify(a.Public(), k.Expires), ErrExpired)
	requireIs(t, k.Verify(a.Public(), t0.Add(-time.Hour)), ErrExpired)
	if _, err := NewRecipientKey(b.Public(), k, t0); err == nil {
		t.Fatal("recipient key accepted for the wrong device")
	}
}

func TestMessagingKeyRotationAndPrune(t *testing.T) {
	dk := testDevice(t, "a")
	first := dk.MessagingKey()
	if dk.RotationDue(t0.Add(24*time.Hour), 7*24*time.Hour) {
		t.Fatal("rotation due after one day of a weekly schedule")
	}
	if !dk.RotationDue(t0.Add(7*24*time.Hour), 7*24*time.Hour) {
		t.Fatal("rotation not due after a week")
	}
	now := t0.Add(7 * 24 * time.Hour)
	second, err := dk.RotateMessagingKey(now, DefaultMessagingKeyLifetime)
	if err != nil {
		t.Fatal(err)
	}
	if second.KeyID() == first.KeyID() || dk.MessagingKey().KeyID() != second.KeyID() {
		t.Fatal("rotation did not make a new current key")
	}
	if err := second.Verify(dk.Public(), now); err != nil {
		t.Fatal(err)
	}
	if dk.messagingPrivateFor(first.KeyID()) == nil {
		t.Fatal("old private key dropped before its grace period")
	}
	if n := dk.PruneMessagingKeys(first.Expires, 24*time.Hour); n != 0 {
		t.Fatalf("pruned %d keys inside the grace period", n)
	}
	if n := dk.PruneMessagingKeys(first.Expires.Add(25*time.Hour), 24*time.Hour); n != 1 {
		t.Fatalf("pruned %d keys after the grace period, want 1", n)
	}
	if dk.messagingPrivateFor(first.KeyID()) != nil || dk.messagingPrivateFor(second.KeyID()) == nil {
		t.Fatal("prune removed the wrong key")
	}
	// The device's public keys (bound by its sigchain) do not change when the first messaging key is pruned.
	back, err := DecodeDeviceKeys(dk.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if !back.Public().Equal(dk.Public()) || !bytes.Equal(back.Public().Messaging, first.Key) {
		t.Fatal("public keys changed after prune and reload")
	}
}

func TestSignaturesDoNotCrossPurposes(t *testing.T) {
	dk := testDevice(t, "a")
	contexts := []string{CtxDeviceReg, CtxDeviceCert, CtxMessagingKey, CtxConnAuth, CtxKeyDist, CtxMessage,
		KindGenesis.context(), KindAddDevice.context(), KindRevokeDevice.context(), KindSetUsername.context(),
		KindSetProfile.context(), KindLinkSocial.context(), ctxRequestPrefix + "mailbox-fetch"}
	msg := []byte("the same transcript")
	pub := dk.Public().Signing
	for _, signCtx := range contexts {
		sig := dk.sign(signCtx, msg)
		for _, verCtx := range contexts {
			if got := verifySig(pub, verCtx, msg, sig); got != (signCtx == verCtx) {
				t.Fatalf("signed for %q, verify for %q: %v", signCtx, verCtx, got)
			}
		}
		if ed25519.Verify(pub, msg, sig) {
			t.Fatalf("signature for %q verifies as plain Ed25519", signCtx)
		}
	}
}
