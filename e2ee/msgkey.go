package e2ee

import (
	"crypto/hpke"
	"time"

	"github.com/iagon/gridchat/e2ee/internal/frame"
)

// SignedMessagingKey is a device's published HPKE messaging key (a "signed prekey"): signed by the device's
// signing key with context CtxMessagingKey, with a creation and an expiry time, so it can rotate.
type SignedMessagingKey struct {
	Device  DeviceID
	Key     []byte // HPKE MLKEM768X25519 public key
	Created time.Time
	Expires time.Time
	Sig     []byte
}

const maxMessagingKeySize = headerSize + suiteSize + 32 + 4 + messagingPublicSize + 16 + signatureSize

// KeyID returns the ID of the messaging key: SHA-256 over "gridchat/v1/messaging-key-id" and the key.
func (k *SignedMessagingKey) KeyID() [32]byte { return frame.Hash(labelKeyID, k.Key) }

func (k *SignedMessagingKey) clone() *SignedMessagingKey {
	c := *k
	c.Key = append([]byte(nil), k.Key...)
	c.Sig = append([]byte(nil), k.Sig...)
	return &c
}

func (k *SignedMessagingKey) transcript() []byte {
	b := frame.NewBuilder(maxMessagingKeySize)
	putHeader(b, tagMessagingKey)
	b.Raw(k.Device[:])
	b.Var(k.Key)
	b.U64(unixSeconds(k.Created))
	b.U64(unixSeconds(k.Expires))
	out, _ := b.Bytes()
	return out
}

// Encode returns the encoding: the signed transcript followed by the 64-byte signature.
func (k *SignedMessagingKey) Encode() []byte { return append(k.transcript(), k.Sig...) }

// DecodeSignedMessagingKey decodes an encoding made by Encode. It does not verify the signature (Verify does).
func DecodeSignedMessagingKey(data []byte) (*SignedMessagingKey, error) {
	const op = "decode signed messaging key"
	if len(data) > maxMessagingKeySize {
		return nil, malformed(op)
	}
	r := frame.NewReader(data)
	if err := readHeader(r, tagMessagingKey, op); err != nil {
		return nil, err
	}
	k := &SignedMessagingKey{}
	r.Fixed(k.Device[:])
	k.Key = r.Var(messagingPublicSize)
	created, expires := r.U64(), r.U64()
	k.Sig = r.Raw(signatureSize)
	if !r.Done() || len(k.Key) != messagingPublicSize || created > maxTimeUnixSecond || expires > maxTimeUnixSecond || expires <= created {
		return nil, malformed(op)
	}
	if _, err := hpkeKEM().NewPublicKey(k.Key); err != nil {
		return nil, errorf(op, ErrMalformed, "key: %v", err)
	}
	k.Created, k.Expires = fromUnix(created), fromUnix(expires)
	return k, nil
}

// ClockSkew is the tolerance for a creation time in the future and for proof freshness checks that do not take
// their own window.
const ClockSkew = 5 * time.Minute

// Verify checks that k is signed by dev and valid at now (created no later than now+ClockSkew, not expired).
func (k *SignedMessagingKey) Verify(dev DevicePublic, now time.Time) error {
	const op = "verify signed messaging key"
	if k.Device != dev.ID() {
		return errorf(op, ErrUnknownSender, "key of device %s checked against %s", k.Device, dev.ID())
	}
	if !verifySig(dev.Signing, CtxMessagingKey, k.transcript(), k.Sig) {
		return errorf(op, ErrBadSignature, "device %s", k.Device)
	}
	if now.Add(ClockSkew).Before(k.Created) || !now.Before(k.Expires) {
		return errorf(op, ErrExpired, "valid %s to %s, now %s", k.Created, k.Expires, now.UTC())
	}
	return nil
}

func (dk *DeviceKeys) signMessagingKey(pub []byte, now time.Time, lifetime time.Duration) (*SignedMessagingKey, error) {
	if lifetime < time.Second {
		return nil, errorf("sign messaging key", ErrMalformed, "lifetime %s", lifetime)
	}
	created := now.Truncate(time.Second).UTC()
	k := &SignedMessagingKey{Device: dk.id, Key: append([]byte(nil), pub...), Created: created, Expires: created.Add(lifetime.Truncate(time.Second))}
	k.Sig = dk.sign(CtxMessagingKey, k.transcript())
	return k, nil
}

// RecipientKey is a verified messaging key of one recipient device, ready for Distribute.
type RecipientKey struct {
	Device DeviceID
	KeyID  [32]byte
	key    hpke.PublicKey
}

// NewRecipientKey verifies k against the device's public keys at now and returns it as a recipient.
// The caller gets dev from the account's replayed sigchain, so only current devices can be recipients.
func NewRecipientKey(dev DevicePublic, k *SignedMessagingKey, now time.Time) (RecipientKey, error) {
	if err := k.Verify(dev, now); err != nil {
		return RecipientKey{}, err
	}
	pub, err := hpkeKEM().NewPublicKey(k.Key)
	if err != nil {
		return RecipientKey{}, errorf("recipient key", ErrMalformed, "%v", err)
	}
	return RecipientKey{Device: k.Device, KeyID: k.KeyID(), key: pub}, nil
}
