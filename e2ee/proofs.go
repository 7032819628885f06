package e2ee

import (
	"crypto/hpke"
	"crypto/rand"
	"crypto/subtle"
	"fmt"
	"io"
	"time"

	"github.com/iagon/gridchat/e2ee/internal/frame"
)

// Proof field caps.
const (
	MaxGatewayIDLen = 128 // gateway IDs are libp2p peer IDs (binary form) or similar
	MinNonceLen     = 16
	MaxNonceLen     = 64
	MaxPurposeLen   = 64
	maxProofSize    = headerSize + suiteSize + 4 + MaxGatewayIDLen + 4 + MaxNonceLen + 8 + 4 + maxDevicePublic + signatureSize
)

func checkBinding(op string, gateway, nonce []byte) error {
	if len(gateway) == 0 || len(gateway) > MaxGatewayIDLen || len(nonce) < MinNonceLen || len(nonce) > MaxNonceLen {
		return errorf(op, ErrMalformed, "gateway ID of %d bytes, nonce of %d bytes", len(gateway), len(nonce))
	}
	return nil
}

func checkFresh(op string, t, now time.Time, skew time.Duration) error {
	if d := now.Sub(t); d > skew || d < -skew {
		return errorf(op, ErrExpired, "made at %s, now %s", t, now.UTC())
	}
	return nil
}

// RegistrationProof is a device's signature (context CtxDeviceReg) over a gateway's single-use nonce, the
// gateway's ID, its own device ID and both public keys, and the time.
type RegistrationProof struct {
	Gateway []byte
	Nonce   []byte
	Device  DevicePublic
	Time    time.Time
	Sig     []byte
}

// SignRegistration makes dev's registration proof for the gateway's nonce.
func SignRegistration(dev *DeviceKeys, gateway, nonce []byte, now time.Time) (*RegistrationProof, error) {
	if err := checkBinding("sign registration", gateway, nonce); err != nil {
		return nil, err
	}
	p := &RegistrationProof{Gateway: clone(gateway), Nonce: clone(nonce), Device: dev.Public(), Time: now.Truncate(time.Second).UTC()}
	p.Sig = dev.sign(CtxDeviceReg, p.transcript())
	return p, nil
}

func (p *RegistrationProof) transcript() []byte {
	b := frame.NewBuilder(maxProofSize)
	putHeader(b, tagRegistration)
	b.Var(p.Gateway)
	b.Var(p.Nonce)
	b.U64(unixSeconds(p.Time))
	dev := p.Device.ID()
	b.Raw(dev[:])
	b.Var(p.Device.Encode())
	out, _ := b.Bytes()
	return out
}

// Encode returns the proof's encoding (transcript then signature).
func (p *RegistrationProof) Encode() []byte { return append(p.transcript(), p.Sig...) }

// Verify checks the proof for this gateway and the nonce it issued, with the proof's time within skew of now.
func (p *RegistrationProof) Verify(gateway, nonce []byte, now time.Time, skew time.Duration) error {
	const op = "verify registration"
	if subtle.ConstantTimeCompare(p.Gateway, gateway) != 1 || subtle.ConstantTimeCompare(p.Nonce, nonce) != 1 {
		return errorf(op, ErrMismatch, "other gateway or nonce")
	}
	if !verifySig(p.Device.Signing, CtxDeviceReg, p.transcript(), p.Sig) {
		return errorf(op, ErrBadSignature, "device %s", p.Device.ID())
	}
	return checkFresh(op, p.Time, now, skew)
}

// DecodeRegistrationProof decodes a proof strictly (without verifying it).
func DecodeRegistrationProof(data []byte) (*RegistrationProof, error) {
	const op = "decode registration proof"
	if len(data) > maxProofSize {
		return nil, malformed(op)
	}
	r := frame.NewReader(data)
	if err := readHeader(r, tagRegistration, op); err != nil {
		return nil, err
	}
	p := &RegistrationProof{Gateway: r.Var(MaxGatewayIDLen), Nonce: r.Var(MaxNonceLen)}
	t := r.U64()
	var id DeviceID
	r.Fixed(id[:])
	dp := r.Var(maxDevicePublic)
	p.Sig = r.Raw(signatureSize)
	if !r.Done() || t > maxTimeUnixSecond || checkBinding(op, p.Gateway, p.Nonce) != nil {
		return nil, malformed(op)
	}
	var err error
	if p.Device, err = DecodeDevicePublic(dp); err != nil {
		return nil, fmt.Errorf("e2ee: %s: %w", op, err)
	}
	if p.Device.ID() != id {
		return nil, errorf(op, ErrMalformed, "device ID does not match its key")
	}
	p.Time = fromUnix(t)
	return p, nil
}

// KeyChallenge is the gateway's side of the messaging-key proof of possession: a random challenge sealed with
// HPKE to the device's registration messaging key. Send Sealed to the device; keep the KeyChallenge to check
// the answer.
type KeyChallenge struct {
	Sealed []byte
	expect [32]byte
}

func challengeInfo(dev DeviceID, kid [32]byte, gateway, nonce []byte) []byte {
	return frame.Join(labelChallengeInfo, suiteV1().bytes(), dev[:], kid[:], gateway, nonce)
}

func challengeAnswer(secret []byte, dev DeviceID, gateway, nonce []byte) [32]byte {
	return frame.Hash(labelChallengeAns, suiteV1().bytes(), secret, dev[:], gateway, nonce)
}

// NewKeyChallenge seals a fresh 32-byte challenge to dev's registration messaging key, bound to the device,
// the key, the gateway and the registration nonce.
func NewKeyChallenge(dev DevicePublic, gateway, nonce []byte) (*KeyChallenge, error) {
	const op = "new key challenge"
	if err := checkBinding(op, gateway, nonce); err != nil {
		return nil, err
	}
	pub, err := hpkeKEM().NewPublicKey(dev.Messaging)
	if err != nil {
		return nil, errorf(op, ErrMalformed, "messaging key: %v", err)
	}
	secret := make([]byte, 32)
	if _, err := io.ReadFull(rand.Reader, secret); err != nil {
		return nil, fmt.Errorf("e2ee: %s: %w", op, err)
	}
	defer frame.Zero(secret)
	id := dev.ID()
	ct, err := hpke.Seal(pub, hpkeKDF(), hpkeAEAD(), challengeInfo(id, frame.Hash(labelKeyID, dev.Messaging), gateway, nonce), secret)
	if err != nil {
		return nil, fmt.Errorf("e2ee: %s: %w", op, err)
	}
	return &KeyChallenge{Sealed: ct, expect: challengeAnswer(secret, id, gateway, nonce)}, nil
}

// Check compares the device's answer with the expected one in constant time.
func (c *KeyChallenge) Check(answer []byte) error {
	if subtle.ConstantTimeCompare(c.expect[:], answer) != 1 {
		return errorf("check key challenge", ErrMismatch, "wrong answer")
	}
	return nil
}

// AnswerKeyChallenge opens a challenge sealed to this device's registration messaging key and returns the
// answer (a hash of the challenge bound to device, gateway and nonce, so the challenge itself never travels).
func (dk *DeviceKeys) AnswerKeyChallenge(gateway, nonce, sealed []byte) ([]byte, error) {
	const op = "answer key challenge"
	if err := checkBinding(op, gateway, nonce); err != nil {
		return nil, err
	}
	kid := frame.Hash(labelKeyID, dk.public.Messaging)
	priv := dk.messagingPrivateFor(kid)
	if priv == nil {
		return nil, errorf(op, ErrUnknownKey, "registration messaging key pruned")
	}
	secret, err := hpke.Open(priv, hpkeKDF(), hpkeAEAD(), challengeInfo(dk.id, kid, gateway, nonce), sealed)
	if err != nil {
		return nil, fmt.Errorf("e2ee: %s: %w", op, ErrDecrypt)
	}
	defer frame.Zero(secret)
	a := challengeAnswer(secret, dk.id, gateway, nonce)
	return a[:], nil
}

// AuthProof authenticates an already registered device when it opens a WebSocket: its signature (context
// CtxConnAuth) over the gateway's nonce, the gateway ID, the device ID and the time.
type AuthProof struct {
	Gateway []byte
	Nonce   []byte
	Device  DeviceID
	Time    time.Time
	Sig     []byte
}

// SignAuth makes dev's connection proof for the gateway's nonce.
func SignAuth(dev *DeviceKeys, gateway, nonce []byte, now time.Time) (*AuthProof, error) {
	if err := checkBinding("sign auth", gateway, nonce); err != nil {
		return nil, err
	}
	p := &AuthProof{Gateway: clone(gateway), Nonce: clone(nonce), Device: dev.id, Time: now.Truncate(time.Second).UTC()}
	p.Sig = dev.sign(CtxConnAuth, p.transcript())
	return p, nil
}

func (p *AuthProof) transcript() []byte {
	b := frame.NewBuilder(256)
	putHeader(b, tagAuth)
	b.Var(p.Gateway)
	b.Var(p.Nonce)
	b.U64(unixSeconds(p.Time))
	b.Raw(p.Device[:])
	out, _ := b.Bytes()
	return out
}

// Encode returns the proof's encoding (transcript then signature).
func (p *AuthProof) Encode() []byte { return append(p.transcript(), p.Sig...) }

// Verify checks the proof against the device's public keys (from its account's replayed chain), the gateway,
// the nonce it issued, and freshness within skew.
func (p *AuthProof) Verify(dev DevicePublic, gateway, nonce []byte, now time.Time, skew time.Duration) error {
	const op = "verify auth"
	if p.Device != dev.ID() {
		return errorf(op, ErrUnknownSender, "proof of %s checked against %s", p.Device, dev.ID())
	}
	if subtle.ConstantTimeCompare(p.Gateway, gateway) != 1 || subtle.ConstantTimeCompare(p.Nonce, nonce) != 1 {
		return errorf(op, ErrMismatch, "other gateway or nonce")
	}
	if !verifySig(dev.Signing, CtxConnAuth, p.transcript(), p.Sig) {
		return errorf(op, ErrBadSignature, "device %s", p.Device)
	}
	return checkFresh(op, p.Time, now, skew)
}

// DecodeAuthProof decodes a proof strictly (without verifying it).
func DecodeAuthProof(data []byte) (*AuthProof, error) {
	const op = "decode auth proof"
	if len(data) > maxProofSize {
		return nil, malformed(op)
	}
	r := frame.NewReader(data)
	if err := readHeader(r, tagAuth, op); err != nil {
		return nil, err
	}
	p := &AuthProof{Gateway: r.Var(MaxGatewayIDLen), Nonce: r.Var(MaxNonceLen)}
	t := r.U64()
	r.Fixed(p.Device[:])
	p.Sig = r.Raw(signatureSize)
	if !r.Done() || t > maxTimeUnixSecond || checkBinding(op, p.Gateway, p.Nonce) != nil {
		return nil, malformed(op)
	}
	p.Time = fromUnix(t)
	return p, nil
}

// SignedRequest is a device's signed, fresh request (for example a mailbox fetch or a presence record):
// the signature (context "gridchat/v1/req/" + purpose) covers the device ID, a hash of the request body, the
// time and a random 16-byte nonce. The verifier keeps the nonces it saw within the freshness window to refuse
// replays.
type SignedRequest struct {
	Purpose  string
	Device   DeviceID
	BodyHash [32]byte
	Time     time.Time
	Nonce    [16]byte
	Sig      []byte
}

func validPurpose(p string) bool {
	if len(p) == 0 || len(p) > MaxPurposeLen {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '/') {
			return false
		}
	}
	return true
}

func requestBodyHash(body []byte) [32]byte { return frame.Hash(labelRequestBody, body) }

// SignRequest signs body for purpose (lowercase letters, digits, '-' and '/', e.g. "mailbox-fetch").
func SignRequest(dev *DeviceKeys, purpose string, body []byte, now time.Time) (*SignedRequest, error) {
	return signRequest(rand.Reader, dev, purpose, body, now)
}

func signRequest(rnd io.Reader, dev *DeviceKeys, purpose string, body []byte, now time.Time) (*SignedRequest, error) {
	const op = "sign request"
	if !validPurpose(purpose) {
		return nil, errorf(op, ErrMalformed, "purpose %q", purpose)
	}
	q := &SignedRequest{Purpose: purpose, Device: dev.id, BodyHash: requestBodyHash(body), Time: now.Truncate(time.Second).UTC()}
	if _, err := io.ReadFull(rnd, q.Nonce[:]); err != nil {
		return nil, fmt.Errorf("e2ee: %s: %w", op, err)
	}
	q.Sig = dev.sign(ctxRequestPrefix+purpose, q.transcript())
	return q, nil
}

func (q *SignedRequest) transcript() []byte {
	b := frame.NewBuilder(256)
	putHeader(b, tagRequest)
	b.Var([]byte(q.Purpose))
	b.Raw(q.Device[:])
	b.Raw(q.BodyHash[:])
	b.U64(unixSeconds(q.Time))
	b.Raw(q.Nonce[:])
	out, _ := b.Bytes()
	return out
}

// Encode returns the request's encoding (transcript then signature).
func (q *SignedRequest) Encode() []byte { return append(q.transcript(), q.Sig...) }

// Verify checks that q was signed by dev for purpose over body, within skew of now.
func (q *SignedRequest) Verify(dev DevicePublic, purpose string, body []byte, now time.Time, skew time.Duration) error {
	const op = "verify request"
	if q.Device != dev.ID() {
		return errorf(op, ErrUnknownSender, "request of %s checked against %s", q.Device, dev.ID())
	}
	if q.Purpose != purpose || !validPurpose(purpose) {
		return errorf(op, ErrMismatch, "purpose %q, want %q", q.Purpose, purpose)
	}
	if h := requestBodyHash(body); subtle.ConstantTimeCompare(h[:], q.BodyHash[:]) != 1 {
		return errorf(op, ErrMismatch, "other body")
	}
	if !verifySig(dev.Signing, ctxRequestPrefix+purpose, q.transcript(), q.Sig) {
		return errorf(op, ErrBadSignature, "device %s", q.Device)
	}
	return checkFresh(op, q.Time, now, skew)
}

// DecodeSignedRequest decodes a request strictly (without verifying it).
func DecodeSignedRequest(data []byte) (*SignedRequest, error) {
	const op = "decode signed request"
	if len(data) > 512 {
		return nil, malformed(op)
	}
	r := frame.NewReader(data)
	if err := readHeader(r, tagRequest, op); err != nil {
		return nil, err
	}
	q := &SignedRequest{Purpose: string(r.Var(MaxPurposeLen))}
	r.Fixed(q.Device[:])
	r.Fixed(q.BodyHash[:])
	t := r.U64()
	r.Fixed(q.Nonce[:])
	q.Sig = r.Raw(signatureSize)
	if !r.Done() || t > maxTimeUnixSecond || !validPurpose(q.Purpose) {
		return nil, malformed(op)
	}
	q.Time = fromUnix(t)
	return q, nil
}

func clone(p []byte) []byte { return append([]byte(nil), p...) }
