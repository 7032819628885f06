package e2ee

import (
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"io"
	"time"

	"github.com/iagon/gridchat/e2ee/internal/frame"
)

// DeviceID identifies a device: SHA-256 over the label "gridchat/v1/device-id" and the device's Ed25519
// public key (docs/PROTOCOL.md §1.3). It cannot be re-bound to another key.
type DeviceID [32]byte

// String returns the ID as lowercase hex.
func (id DeviceID) String() string { return hex.EncodeToString(id[:]) }

// ParseDeviceID parses 64 lowercase or uppercase hex digits.
func ParseDeviceID(s string) (DeviceID, error) {
	var id DeviceID
	if err := parseHex32(s, id[:]); err != nil {
		return id, fmt.Errorf("e2ee: parse device ID: %w", err)
	}
	return id, nil
}

// AccountID identifies an account: SHA-256 over the label "gridchat/v1/account-id" and the encoding of the
// account's genesis statement.
type AccountID [32]byte

// String returns the ID as lowercase hex.
func (id AccountID) String() string { return hex.EncodeToString(id[:]) }

// ParseAccountID parses 64 hex digits.
func ParseAccountID(s string) (AccountID, error) {
	var id AccountID
	if err := parseHex32(s, id[:]); err != nil {
		return id, fmt.Errorf("e2ee: parse account ID: %w", err)
	}
	return id, nil
}

func parseHex32(s string, dst []byte) error {
	if len(s) != 64 {
		return fmt.Errorf("%w: want 64 hex digits, got %d characters", ErrMalformed, len(s))
	}
	if _, err := hex.Decode(dst, []byte(s)); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

func deviceIDOf(signing ed25519.PublicKey) DeviceID {
	return DeviceID(frame.Hash(labelDeviceID, signing))
}

// DevicePublic is the public half of a device: its Ed25519 signing key and its first (registration) HPKE
// messaging key, under Suite. Later messaging keys are published as SignedMessagingKey.
type DevicePublic struct {
	Suite     Suite
	Signing   ed25519.PublicKey
	Messaging []byte // HPKE MLKEM768X25519 public key, 1216 bytes
}

const messagingPublicSize = 1216

// ID returns the device ID derived from the signing key.
func (p DevicePublic) ID() DeviceID { return deviceIDOf(p.Signing) }

// Equal reports whether p and q are the same keys.
func (p DevicePublic) Equal(q DevicePublic) bool {
	return p.Suite == q.Suite && subtle.ConstantTimeCompare(p.Signing, q.Signing) == 1 &&
		subtle.ConstantTimeCompare(p.Messaging, q.Messaging) == 1
}

// Encode returns the encoding of p (docs/PROTOCOL.md §1.4).
func (p DevicePublic) Encode() []byte {
	b := frame.NewBuilder(headerSize + suiteSize + 32 + 4 + len(p.Messaging))
	putHeader(b, tagDevicePublic)
	b.Raw(p.Signing)
	b.Var(p.Messaging)
	out, _ := b.Bytes()
	return out
}

// DecodeDevicePublic decodes and validates an encoding made by Encode.
func DecodeDevicePublic(data []byte) (DevicePublic, error) {
	const op = "decode device public key"
	r := frame.NewReader(data)
	if err := readHeader(r, tagDevicePublic, op); err != nil {
		return DevicePublic{}, err
	}
	p := DevicePublic{Suite: suiteV1(), Signing: ed25519.PublicKey(r.Raw(ed25519.PublicKeySize)), Messaging: r.Var(messagingPublicSize)}
	if !r.Done() || len(p.Messaging) != messagingPublicSize {
		return DevicePublic{}, malformed(op)
	}
	if _, err := hpkeKEM().NewPublicKey(p.Messaging); err != nil {
		return DevicePublic{}, errorf(op, ErrMalformed, "messaging key: %v", err)
	}
	return p, nil
}

// messagingPrivate is one messaging key pair held by a device, with its signed public half.
type messagingPrivate struct {
	priv    hpke.PrivateKey
	seed    []byte // the serialized private key (32-byte X-Wing seed)
	signed  *SignedMessagingKey
	retired time.Time // zero while current
}

// DeviceKeys holds a device's private keys: the Ed25519 signing key and its HPKE messaging keys (the current
// one and any retired ones still inside their grace period). A DeviceKeys is not safe for concurrent use.
type DeviceKeys struct {
	signing ed25519.PrivateKey
	public  DevicePublic
	id      DeviceID
	msg     []*messagingPrivate // oldest first; the last one is current
}

// DefaultMessagingKeyLifetime is how long a new signed messaging key is valid: rotate weekly, with a week of
// overlap for senders with stale directory data.
const DefaultMessagingKeyLifetime = 14 * 24 * time.Hour

// NewDeviceKeys makes a new device: a fresh signing key and a first messaging key, signed, valid from now for
// DefaultMessagingKeyLifetime.
func NewDeviceKeys(now time.Time) (*DeviceKeys, error) {
	return newDeviceKeys(rand.Reader, now)
}

func newDeviceKeys(rnd io.Reader, now time.Time) (*DeviceKeys, error) {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := io.ReadFull(rnd, seed); err != nil {
		return nil, fmt.Errorf("e2ee: new device keys: %w", err)
	}
	defer frame.Zero(seed)
	mp, err := newMessagingPrivate(rnd)
	if err != nil {
		return nil, fmt.Errorf("e2ee: new device keys: %w", err)
	}
	dk := &DeviceKeys{signing: ed25519.NewKeyFromSeed(seed)}
	dk.public = DevicePublic{Suite: suiteV1(), Signing: dk.signing.Public().(ed25519.PublicKey), Messaging: mp.priv.PublicKey().Bytes()}
	dk.id = dk.public.ID()
	mp.signed, err = dk.signMessagingKey(mp.priv.PublicKey().Bytes(), now, DefaultMessagingKeyLifetime)
	if err != nil {
		return nil, fmt.Errorf("e2ee: new device keys: %w", err)
	}
	dk.msg = []*messagingPrivate{mp}
	return dk, nil
}

func newMessagingPrivate(rnd io.Reader) (*messagingPrivate, error) {
	seed := make([]byte, 32)
	if _, err := io.ReadFull(rnd, seed); err != nil {
		return nil, err
	}
	priv, err := hpkeKEM().NewPrivateKey(seed)
	if err != nil {
		return nil, err
	}
	return &messagingPrivate{priv: priv, seed: seed}, nil
}

// ID returns the device ID.
func (dk *DeviceKeys) ID() DeviceID { return dk.id }

// Public returns the device's public keys (signing key and registration messaging key).
func (dk *DeviceKeys) Public() DevicePublic {
	p := dk.public
	p.Signing = append(ed25519.PublicKey(nil), p.Signing...)
	p.Messaging = append([]byte(nil), p.Messaging...)
	return p
}

// MessagingKey returns the current signed messaging key, to publish in the directory.
func (dk *DeviceKeys) MessagingKey() *SignedMessagingKey { return dk.msg[len(dk.msg)-1].signed.clone() }

// RotationDue reports whether the current messaging key was created at least every ago, or expires within
// every (so a weekly schedule always has a valid key published).
func (dk *DeviceKeys) RotationDue(now time.Time, every time.Duration) bool {
	cur := dk.msg[len(dk.msg)-1].signed
	return !now.Before(cur.Created.Add(every)) || !now.Add(every).Before(cur.Expires)
}

// RotateMessagingKey makes a new messaging key, signed and valid from now for lifetime, and makes it current.
// The previous private key is kept until PruneMessagingKeys removes it, so key distributions sealed to it
// while it was published still open.
func (dk *DeviceKeys) RotateMessagingKey(now time.Time, lifetime time.Duration) (*SignedMessagingKey, error) {
	return dk.rotate(rand.Reader, now, lifetime)
}

func (dk *DeviceKeys) rotate(rnd io.Reader, now time.Time, lifetime time.Duration) (*SignedMessagingKey, error) {
	const op = "rotate messaging key"
	if len(dk.msg) >= maxMessagingKeys {
		return nil, errorf(op, ErrMalformed, "%d messaging keys held; prune first", len(dk.msg))
	}
	mp, err := newMessagingPrivate(rnd)
	if err != nil {
		return nil, fmt.Errorf("e2ee: %s: %w", op, err)
	}
	mp.signed, err = dk.signMessagingKey(mp.priv.PublicKey().Bytes(), now, lifetime)
	if err != nil {
		return nil, fmt.Errorf("e2ee: %s: %w", op, err)
	}
	dk.msg[len(dk.msg)-1].retired = now.Truncate(time.Second)
	dk.msg = append(dk.msg, mp)
	return mp.signed.clone(), nil
}

// PruneMessagingKeys deletes (and zeroes) every retired messaging private key whose signed key expired more
// than grace before now. The current key is never pruned. It returns how many keys were deleted.
func (dk *DeviceKeys) PruneMessagingKeys(now time.Time, grace time.Duration) int {
	kept := dk.msg[:0]
	n := 0
	for i, mp := range dk.msg {
		if i < len(dk.msg)-1 && !mp.retired.IsZero() && now.After(mp.signed.Expires.Add(grace)) {
			frame.Zero(mp.seed)
			n++
			continue
		}
		kept = append(kept, mp)
	}
	clear(dk.msg[len(kept):])
	dk.msg = kept
	return n
}

// messagingPrivateFor returns the private key whose public key has ID kid.
func (dk *DeviceKeys) messagingPrivateFor(kid [32]byte) hpke.PrivateKey {
	for i := len(dk.msg) - 1; i >= 0; i-- {
		if id := dk.msg[i].signed.KeyID(); subtle.ConstantTimeCompare(id[:], kid[:]) == 1 {
			return dk.msg[i].priv
		}
	}
	return nil
}

// Wipe zeroes the private key bytes this DeviceKeys holds and makes it unusable. (Keys inside crypto/hpke
// objects cannot be reached; they go with the garbage collector.)
func (dk *DeviceKeys) Wipe() {
	frame.Zero(dk.signing)
	for _, mp := range dk.msg {
		frame.Zero(mp.seed)
	}
	dk.msg = nil
}

func (dk *DeviceKeys) sign(context string, msg []byte) []byte {
	sig, err := dk.signing.Sign(nil, msg, &ed25519.Options{Context: context})
	if err != nil {
		// Only reachable with a context over 255 bytes; every context here is a short constant.
		panic("e2ee: sign: " + err.Error())
	}
	return sig
}

func verifySig(pub ed25519.PublicKey, context string, msg, sig []byte) bool {
	if len(pub) != ed25519.PublicKeySize || len(sig) != signatureSize {
		return false
	}
	return ed25519.VerifyWithOptions(pub, msg, sig, &ed25519.Options{Context: context}) == nil
}

// Private key encoding limits.
const maxMessagingKeys = 64

// Encode returns the private key material of dk (docs/PROTOCOL.md §1.5). Treat the result as a secret: store
// it only sealed (SealPrivate).
func (dk *DeviceKeys) Encode() []byte {
	b := frame.NewBuilder(256 + len(dk.msg)*1500)
	putHeader(b, tagDeviceKeys)
	b.Raw(dk.signing.Seed())
	b.Var(dk.public.Messaging)
	b.U16(uint16(len(dk.msg)))
	for _, mp := range dk.msg {
		b.Raw(mp.seed)
		b.Var(mp.signed.Encode())
		b.U64(unixSeconds(mp.retired))
	}
	out, _ := b.Bytes()
	return out
}

// DecodeDeviceKeys decodes private key material made by Encode and checks that every messaging key is signed
// by the signing key and matches its private half.
func DecodeDeviceKeys(data []byte) (*DeviceKeys, error) {
	const op = "decode device keys"
	r := frame.NewReader(data)
	if err := readHeader(r, tagDeviceKeys, op); err != nil {
		return nil, err
	}
	seed := r.Raw(ed25519.SeedSize)
	regKey := r.Var(messagingPublicSize)
	n := int(r.U16())
	if !r.OK() || n < 1 || n > maxMessagingKeys || len(regKey) != messagingPublicSize {
		return nil, malformed(op)
	}
	if _, err := hpkeKEM().NewPublicKey(regKey); err != nil {
		return nil, errorf(op, ErrMalformed, "registration messaging key: %v", err)
	}
	dk := &DeviceKeys{signing: ed25519.NewKeyFromSeed(seed)}
	frame.Zero(seed)
	dk.public.Suite = suiteV1()
	dk.public.Signing = dk.signing.Public().(ed25519.PublicKey)
	dk.id = dk.public.ID()
	for i := 0; i < n; i++ {
		mseed := r.Raw(32)
		signed := r.Var(maxMessagingKeySize)
		retired := r.U64()
		if !r.OK() {
			return nil, malformed(op)
		}
		priv, err := hpkeKEM().NewPrivateKey(mseed)
		if err != nil {
			return nil, errorf(op, ErrMalformed, "messaging key %d: %v", i, err)
		}
		smk, err := DecodeSignedMessagingKey(signed)
		if err != nil {
			return nil, fmt.Errorf("e2ee: %s: messaging key %d: %w", op, i, err)
		}
		if smk.Device != dk.id || !verifySig(dk.public.Signing, CtxMessagingKey, smk.transcript(), smk.Sig) {
			return nil, errorf(op, ErrBadSignature, "messaging key %d not signed by this device", i)
		}
		if subtle.ConstantTimeCompare(smk.Key, priv.PublicKey().Bytes()) != 1 {
			return nil, errorf(op, ErrMalformed, "messaging key %d does not match its private key", i)
		}
		if (retired == 0) != (i == n-1) || retired > maxTimeUnixSecond {
			return nil, errorf(op, ErrMalformed, "messaging key %d: bad retirement time", i)
		}
		mp := &messagingPrivate{priv: priv, seed: mseed, signed: smk}
		if retired != 0 {
			mp.retired = time.Unix(int64(retired), 0).UTC()
		}
		dk.msg = append(dk.msg, mp)
	}
	if !r.Done() {
		return nil, malformed(op)
	}
	dk.public.Messaging = regKey
	return dk, nil
}

// Sealed private key blobs: magic "GCSK", version 1, 24-byte nonce, XChaCha20-Poly1305 ciphertext.
const (
	sealedMagic   = "GCSK"
	sealedVersion = 1
)

// SealPrivate encrypts dk's private key material at rest under key (32 bytes, chosen by the caller, e.g. from
// the platform keystore). The header (magic, version, nonce) is authenticated.
func SealPrivate(key []byte, dk *DeviceKeys) ([]byte, error) {
	return sealPrivate(rand.Reader, key, dk)
}

// OpenPrivate decrypts a blob made by SealPrivate. A wrong key or any modified byte gives ErrDecrypt.
func OpenPrivate(key, blob []byte) (*DeviceKeys, error) {
	const op = "open private keys"
	pt, err := openSealed(op, key, blob)
	if err != nil {
		return nil, err
	}
	defer frame.Zero(pt)
	return DecodeDeviceKeys(pt)
}

func sealPrivate(rnd io.Reader, key []byte, dk *DeviceKeys) ([]byte, error) {
	pt := dk.Encode()
	defer frame.Zero(pt)
	return sealBlob(rnd, "seal private keys", key, pt)
}

func unixSeconds(t time.Time) uint64 {
	if t.IsZero() || t.Unix() < 0 {
		return 0
	}
	return uint64(t.Unix())
}

func fromUnix(s uint64) time.Time { return time.Unix(int64(s), 0).UTC() }

// DeviceIDOf returns the device ID of an Ed25519 signing public key.
func DeviceIDOf(signing ed25519.PublicKey) DeviceID { return deviceIDOf(signing) }
