// Package receipt defines the signed receipt a mailbox replica returns for every envelope it has written to
// disk, and the checks a sender's client runs before it believes "stored": every receipt verifies, each is from a
// distinct replica, and there are at least a write quorum of them.
//
// The package depends only on the standard library and a CBOR codec, so the client SDK can use it under
// GOOS=js GOARCH=wasm. A replica is named by its libp2p peer ID; the Ed25519 public key that verifies its
// receipts is read out of the peer ID itself (see PublicKey), without libp2p. The format is specified in
// docs/PROTOCOL.md §5 ("Mailboxes").
package receipt

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// Context is the Ed25519ctx context string of receipt signatures.
const Context = "gridchat/v1/mailbox-receipt"

// Version is the receipt format version.
const Version = 1

// Sizes of the fixed-length fields.
const (
	DeviceIDSize  = 32
	MessageIDSize = 16
	HashSize      = sha256.Size
	PeerIDSize    = 38 // an Ed25519 peer ID: identity multihash of the protobuf public key
	// MaxEncodedSize caps an encoded receipt; decoders refuse anything longer.
	MaxEncodedSize = 256
)

// envelopeLabel domain-separates the envelope hash.
const envelopeLabel = "gridchat/v1/mailbox-envelope"

// Sentinel errors; every error of this package wraps one of them.
var (
	// ErrMalformed: the encoding is not a valid version-1 receipt.
	ErrMalformed = errors.New("receipt: malformed")
	// ErrBadSignature: the signature does not verify under the replica's peer key.
	ErrBadSignature = errors.New("receipt: bad signature")
	// ErrMismatch: the receipt is for another device, message or envelope.
	ErrMismatch = errors.New("receipt: for another envelope")
	// ErrDuplicateReplica: two receipts name the same replica.
	ErrDuplicateReplica = errors.New("receipt: two receipts from one replica")
	// ErrNoQuorum: fewer distinct replicas signed than the write quorum.
	ErrNoQuorum = errors.New("receipt: no write quorum")
	// ErrUnsupportedKey: the peer ID does not embed an Ed25519 key.
	ErrUnsupportedKey = errors.New("receipt: peer ID is not an Ed25519 identity")
)

// Receipt is one replica's signed statement that it wrote an envelope for a device to disk.
type Receipt struct {
	Replica      []byte              // the replica's libp2p peer ID, binary form (38 bytes)
	Device       [DeviceIDSize]byte  // the mailbox's device
	MessageID    [MessageIDSize]byte // the envelope's message ID
	EnvelopeHash [HashSize]byte      // EnvelopeHash of the stored envelope
	Time         time.Time           // when the replica wrote it (millisecond precision)
	Signature    []byte              // Ed25519ctx over Transcript, context Context
}

// EnvelopeHash is the hash a receipt commits to: SHA-256 over the label "gridchat/v1/mailbox-envelope", the
// message ID, the sender device, the recipient device and the ciphertext, each preceded by its length as a
// big-endian uint32. A sender's client computes it from what it sent.
func EnvelopeHash(messageID [MessageIDSize]byte, sender, recipient [DeviceIDSize]byte, ciphertext []byte) [HashSize]byte {
	h := sha256.New()
	for _, f := range [][]byte{[]byte(envelopeLabel), messageID[:], sender[:], recipient[:], ciphertext} {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(f)))
		h.Write(n[:])
		h.Write(f)
	}
	var out [HashSize]byte
	h.Sum(out[:0])
	return out
}

// Transcript returns the bytes the signature covers: the version byte, then the replica peer ID, device ID,
// message ID, envelope hash and the time in Unix milliseconds (8 bytes big-endian), each field preceded by its
// length as a big-endian uint32.
func (r *Receipt) Transcript() []byte {
	var t [8]byte
	binary.BigEndian.PutUint64(t[:], uint64(r.Time.UnixMilli()))
	out := make([]byte, 0, 1+5*4+len(r.Replica)+DeviceIDSize+MessageIDSize+HashSize+8)
	out = append(out, Version)
	for _, f := range [][]byte{r.Replica, r.Device[:], r.MessageID[:], r.EnvelopeHash[:], t[:]} {
		out = binary.BigEndian.AppendUint32(out, uint32(len(f)))
		out = append(out, f...)
	}
	return out
}

// Sign fills in r.Signature with key, which must be the private key of the peer ID in r.Replica. The time is
// truncated to milliseconds first, as encoded.
func Sign(r *Receipt, key ed25519.PrivateKey) error {
	pub, err := PublicKey(r.Replica)
	if err != nil {
		return fmt.Errorf("receipt: sign: %w", err)
	}
	if !bytes.Equal(pub, key.Public().(ed25519.PublicKey)) {
		return fmt.Errorf("receipt: sign: %w: key is not the replica's", ErrMismatch)
	}
	r.Time = time.UnixMilli(r.Time.UnixMilli()).UTC()
	sig, err := key.Sign(nil, r.Transcript(), &ed25519.Options{Context: Context})
	if err != nil {
		return fmt.Errorf("receipt: sign: %w", err)
	}
	r.Signature = sig
	return nil
}

// Verify checks r's signature under the key embedded in r.Replica.
func (r *Receipt) Verify() error {
	pub, err := PublicKey(r.Replica)
	if err != nil {
		return err
	}
	if len(r.Signature) != ed25519.SignatureSize ||
		ed25519.VerifyWithOptions(pub, r.Transcript(), r.Signature, &ed25519.Options{Context: Context}) != nil {
		return ErrBadSignature
	}
	return nil
}

// Expect names the envelope a set of receipts must be for.
type Expect struct {
	Device       [DeviceIDSize]byte
	MessageID    [MessageIDSize]byte
	EnvelopeHash [HashSize]byte
}

// VerifyReceipts decodes and checks the receipts returned for one stored envelope: each must decode strictly,
// verify under its replica's peer key and name want's device, message and envelope hash; no replica may appear
// twice; and there must be at least quorum of them. Any bad receipt fails the whole set, because an honest
// gateway never forwards one. It returns the decoded receipts.
func VerifyReceipts(encoded [][]byte, want Expect, quorum int) ([]Receipt, error) {
	if quorum < 1 {
		return nil, fmt.Errorf("receipt: verify: quorum %d: %w", quorum, ErrNoQuorum)
	}
	out := make([]Receipt, 0, len(encoded))
	seen := make(map[string]struct{}, len(encoded))
	for i, b := range encoded {
		r, err := Decode(b)
		if err != nil {
			return nil, fmt.Errorf("receipt: verify %d: %w", i, err)
		}
		if r.Device != want.Device || r.MessageID != want.MessageID || r.EnvelopeHash != want.EnvelopeHash {
			return nil, fmt.Errorf("receipt: verify %d: %w", i, ErrMismatch)
		}
		if err := r.Verify(); err != nil {
			return nil, fmt.Errorf("receipt: verify %d: %w", i, err)
		}
		if _, dup := seen[string(r.Replica)]; dup {
			return nil, fmt.Errorf("receipt: verify %d: %w", i, ErrDuplicateReplica)
		}
		seen[string(r.Replica)] = struct{}{}
		out = append(out, r)
	}
	if len(out) < quorum {
		return nil, fmt.Errorf("receipt: verify: %d distinct replicas, need %d: %w", len(out), quorum, ErrNoQuorum)
	}
	return out, nil
}

// PublicKey extracts the Ed25519 public key from a binary libp2p peer ID. An Ed25519 peer ID is an identity
// multihash (code 0x00, length 0x24) of the protobuf-encoded libp2p PublicKey message {Type: Ed25519 (1),
// Data: the 32-byte key}, so its 38 bytes are 00 24 08 01 12 20 followed by the key. Peer IDs of other key types
// are SHA-256 multihashes that do not contain the key; they are refused.
func PublicKey(peerID []byte) (ed25519.PublicKey, error) {
	if len(peerID) != PeerIDSize || !bytes.Equal(peerID[:6], ed25519PeerIDPrefix[:]) {
		return nil, ErrUnsupportedKey
	}
	return ed25519.PublicKey(bytes.Clone(peerID[6:])), nil
}

var ed25519PeerIDPrefix = [6]byte{0x00, 0x24, 0x08, 0x01, 0x12, 0x20}

// PeerID returns the binary libp2p peer ID of an Ed25519 public key (the inverse of PublicKey).
func PeerID(pub ed25519.PublicKey) []byte {
	out := make([]byte, 0, PeerIDSize)
	out = append(out, ed25519PeerIDPrefix[:]...)
	return append(out, pub...)
}

// wireReceipt is the CBOR form: a map with small integer keys.
type wireReceipt struct {
	Version   uint64 `cbor:"1,keyasint"`
	Replica   []byte `cbor:"2,keyasint"`
	Device    []byte `cbor:"3,keyasint"`
	MessageID []byte `cbor:"4,keyasint"`
	Hash      []byte `cbor:"5,keyasint"`
	TimeMS    int64  `cbor:"6,keyasint"`
	Signature []byte `cbor:"7,keyasint"`
}

// Encode returns the receipt's deterministic CBOR encoding.
func (r *Receipt) Encode() []byte {
	b, err := encMode.Marshal(wireReceipt{
		Version: Version, Replica: r.Replica, Device: r.Device[:], MessageID: r.MessageID[:],
		Hash: r.EnvelopeHash[:], TimeMS: r.Time.UnixMilli(), Signature: r.Signature,
	})
	if err != nil {
		// Marshalling a struct of byte strings and integers cannot fail.
		panic("receipt: encode: " + err.Error())
	}
	return b
}

// Decode parses an encoded receipt strictly: every field present with its exact size, no unknown or duplicate
// keys, no indefinite lengths, no trailing bytes, version 1. It does not verify the signature.
func Decode(b []byte) (Receipt, error) {
	if len(b) > MaxEncodedSize {
		return Receipt{}, fmt.Errorf("%w: %d bytes", ErrMalformed, len(b))
	}
	var w wireReceipt
	if err := decMode.Unmarshal(b, &w); err != nil {
		return Receipt{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if w.Version != Version {
		return Receipt{}, fmt.Errorf("%w: version %d", ErrMalformed, w.Version)
	}
	if len(w.Replica) != PeerIDSize || len(w.Device) != DeviceIDSize || len(w.MessageID) != MessageIDSize ||
		len(w.Hash) != HashSize || len(w.Signature) != ed25519.SignatureSize || w.TimeMS < 0 {
		return Receipt{}, fmt.Errorf("%w: field sizes", ErrMalformed)
	}
	r := Receipt{Replica: w.Replica, Time: time.UnixMilli(w.TimeMS).UTC(), Signature: w.Signature}
	copy(r.Device[:], w.Device)
	copy(r.MessageID[:], w.MessageID)
	copy(r.EnvelopeHash[:], w.Hash)
	// Re-encoding must give the same bytes: this refuses non-canonical integer and length encodings.
	if !bytes.Equal(r.Encode(), b) {
		return Receipt{}, fmt.Errorf("%w: not in canonical form", ErrMalformed)
	}
	return r, nil
}

var (
	encMode = mustEncMode()
	decMode = mustDecMode()
)

func mustEncMode() cbor.EncMode {
	m, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return m
}

func mustDecMode() cbor.DecMode {
	m, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		MaxNestedLevels:   4,
		MaxArrayElements:  16,
		MaxMapPairs:       16,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return m
}
