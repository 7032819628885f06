package e2ee

import (
	"bytes"
	"testing"
	"time"
)

var (
	testGateway = []byte("gateway-12D3KooW")
	testNonce   = bytes.Repeat([]byte{0x42}, 32)
)

func TestRegistrationProofRoundTripAndBinding(t *testing.T) {
	dev := testDevice(t, "a")
	p, err := SignRegistration(dev, testGateway, testNonce, t0)
	if err != nil {
		t.Fatal(err)
	}
	enc := p.Encode()
	q, err := DecodeRegistrationProof(enc)
	if err != nil || !bytes.Equal(q.Encode(), enc) {
		t.Fatalf("round trip: %v", err)
	}
	if err := q.Verify(testGateway, testNonce, t0.Add(time.Minute), ClockSkew); err != nil {
		t.Fatal(err)
	}
	requireIs(t, q.Verify([]byte("other-gateway"), testNonce, t0, ClockSkew), ErrMismatch)
	requireIs(t, q.Verify(testGateway, bytes.Repeat([]byte{1}, 32), t0, ClockSkew), ErrMismatch)
	requireIs(t, q.Verify(testGateway, testNonce, t0.Add(time.Hour), ClockSkew), ErrExpired)
	flipEachByte(t, "registration proof", enc, func(b []byte) error {
		q, err := DecodeRegistrationProof(b)
		if err != nil {
			return err
		}
		return q.Verify(testGateway, testNonce, t0, ClockSkew)
	})
	// Substituting another device's keys (e.g. a registration for a key someone else holds) fails.
	q.Device = testDevice(t, "b").Public()
	requireIs(t, q.Verify(testGateway, testNonce, t0, ClockSkew), ErrBadSignature)
}

func TestKeyChallengeProvesMessagingKeyPossession(t *testing.T) {
	dev, other := testDevice(t, "a"), testDevice(t, "b")
	ch, err := NewKeyChallenge(dev.Public(), testGateway, testNonce)
	if err != nil {
		t.Fatal(err)
	}
	ans, err := dev.AnswerKeyChallenge(testGateway, testNonce, ch.Sealed)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Check(ans); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(ch.Sealed, ans) {
		t.Fatal("answer visible in the challenge")
	}
	_, err = other.AnswerKeyChallenge(testGateway, testNonce, ch.Sealed)
	requireIs(t, err, ErrDecrypt)
	_, err = dev.AnswerKeyChallenge([]byte("other-gateway"), testNonce, ch.Sealed)
	requireIs(t, err, ErrDecrypt)
	flipEachByte(t, "key challenge", ch.Sealed, func(b []byte) error {
		a, err := dev.AnswerKeyChallenge(testGateway, testNonce, b)
		if err != nil {
			return err
		}
		return ch.Check(a)
	})
	bad := bytes.Clone(ans)
	bad[0] ^= 1
	requireIs(t, ch.Check(bad), ErrMismatch)
}

func TestAuthProofRoundTripAndBinding(t *testing.T) {
	dev := testDevice(t, "a")
	p, err := SignAuth(dev, testGateway, testNonce, t0)
	if err != nil {
		t.Fatal(err)
	}
	enc := p.Encode()
	q, err := DecodeAuthProof(enc)
	if err != nil || !bytes.Equal(q.Encode(), enc) {
		t.Fatalf("round trip: %v", err)
	}
	if err := q.Verify(dev.Public(), testGateway, testNonce, t0, ClockSkew); err != nil {
		t.Fatal(err)
	}
	requireIs(t, q.Verify(testDevice(t, "b").Public(), testGateway, testNonce, t0, ClockSkew), ErrUnknownSender)
	requireIs(t, q.Verify(dev.Public(), testGateway, []byte("another-nonce-16"), t0, ClockSkew), ErrMismatch)
	requireIs(t, q.Verify(dev.Public(), testGateway, testNonce, t0.Add(-time.Hour), ClockSkew), ErrExpired)
	flipEachByte(t, "auth proof", enc, func(b []byte) error {
		q, err := DecodeAuthProof(b)
		if err != nil {
			return err
		}
		return q.Verify(dev.Public(), testGateway, testNonce, t0, ClockSkew)
	})
	// A registration proof's signature does not authenticate a connection (and vice versa).
	reg, err := SignRegistration(dev, testGateway, testNonce, t0)
	if err != nil {
		t.Fatal(err)
	}
	q.Sig = reg.Sig
	requireIs(t, q.Verify(dev.Public(), testGateway, testNonce, t0, ClockSkew), ErrBadSignature)
}

func TestSignedRequestBindsPurposeBodyAndDevice(t *testing.T) {
	dev := testDevice(t, "a")
	body := []byte("fetch from 17")
	q, err := signRequest(newDetRand("req"), dev, "mailbox-fetch", body, t0)
	if err != nil {
		t.Fatal(err)
	}
	enc := q.Encode()
	r, err := DecodeSignedRequest(enc)
	if err != nil || !bytes.Equal(r.Encode(), enc) {
		t.Fatalf("round trip: %v", err)
	}
	if err := r.Verify(dev.Public(), "mailbox-fetch", body, t0, ClockSkew); err != nil {
		t.Fatal(err)
	}
	requireIs(t, r.Verify(dev.Public(), "presence", body, t0, ClockSkew), ErrMismatch)
	requireIs(t, r.Verify(dev.Public(), "mailbox-fetch", []byte("fetch from 0"), t0, ClockSkew), ErrMismatch)
	requireIs(t, r.Verify(testDevice(t, "b").Public(), "mailbox-fetch", body, t0, ClockSkew), ErrUnknownSender)
	requireIs(t, r.Verify(dev.Public(), "mailbox-fetch", body, t0.Add(time.Hour), ClockSkew), ErrExpired)
	flipEachByte(t, "signed request", enc, func(b []byte) error {
		r, err := DecodeSignedRequest(b)
		if err != nil {
			return err
		}
		return r.Verify(dev.Public(), "mailbox-fetch", body, t0, ClockSkew)
	})
	// Relabelling the purpose keeps the transcript honest: the signature was made under another context.
	r.Purpose = "presence"
	requireIs(t, r.Verify(dev.Public(), "presence", body, t0, ClockSkew), ErrBadSignature)
	if _, err := SignRequest(dev, "Bad Purpose", body, t0); !isTyped(err) {
		t.Fatalf("bad purpose: %v", err)
	}
}
