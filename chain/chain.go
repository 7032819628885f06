// Package chain makes every device-key publication verifiable: it defines the
// log entry that commits to a user-signed record without revealing it, the
// receipt (a C2SP tlog-proof) that proves the entry is in a witnessed log, the
// offline verification of receipts, and the small interfaces that the log,
// witness and anchor backends implement (chain/tlog, chain/witness,
// chain/cardano).
//
// The wire formats are described in docs/PROTOCOL.md, section 6.
package chain

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Domain-separation labels of the entry construction.
const (
	labelAccountKey = "gridchat/v1/log-account-key"
	labelAccountTag = "gridchat/v1/log-account-tag"
	labelRecord     = "gridchat/v1/log-record"
)

// EntryVersion is the first byte of every log entry.
const EntryVersion = 1

// EntrySize is the length in bytes of an encoded log entry.
const EntrySize = 1 + 32 + 32

// MaxRecordSize bounds the user-signed record a publication may carry.
const MaxRecordSize = 64 << 10

// AccountKey is the per-account key under which log entries name their
// account. It is derived from the account's genesis statement with
// DeriveAccountKey, so whoever holds the account chain can find and check the
// account's entries, while a reader of the public log alone cannot tell whose
// entries it holds or link two entries of one account.
type AccountKey [32]byte

// DeriveAccountKey returns the AccountKey of the account whose genesis
// statement (its first, user-signed sigchain statement) is genesis.
func DeriveAccountKey(genesis []byte) AccountKey {
	m := hmac.New(sha256.New, []byte(labelAccountKey))
	m.Write(genesis)
	var k AccountKey
	copy(k[:], m.Sum(nil))
	return k
}

// Record is one device-key publication handed to the log: the canonical bytes
// of a user-signed sigchain statement (registration, add device, revoke), its
// account and its sequence number in the account's sigchain.
type Record struct {
	// Account is the account's key, from DeriveAccountKey.
	Account AccountKey
	// Seq is the statement's sequence number in the account's sigchain
	// (0 for the genesis statement).
	Seq uint64
	// Body is the canonical encoding of the user-signed statement.
	Body []byte
}

// Entry is the 65-byte log entry of a Record:
//
//	version (1) || account tag (32) || record hash (32)
//
// account tag = HMAC-SHA256(Account, "gridchat/v1/log-account-tag" || uint64be(Seq))
// record hash = SHA-256("gridchat/v1/log-record" || uint32be(len(Body)) || Body)
type Entry [EntrySize]byte

// ErrRecordTooLarge is returned for a record body over MaxRecordSize.
var ErrRecordTooLarge = errors.New("chain: record too large")

// NewEntry computes the log entry of r.
func NewEntry(r Record) (Entry, error) {
	var e Entry
	if len(r.Body) > MaxRecordSize {
		return e, fmt.Errorf("chain: entry of record (%d bytes): %w", len(r.Body), ErrRecordTooLarge)
	}
	e[0] = EntryVersion
	tag := AccountTag(r.Account, r.Seq)
	copy(e[1:33], tag[:])
	h := sha256.New()
	h.Write([]byte(labelRecord))
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(r.Body))))
	h.Write(r.Body)
	copy(e[33:], h.Sum(nil))
	return e, nil
}

// AccountTag returns the tag that entries of the account's statement number
// seq carry. An account holder scans the log for the tags of its sequence
// numbers to find every entry published for the account; two entries with one
// tag and different record hashes are two statements claiming the same place
// in the sigchain (a fork). One record published twice (a retried
// publication) gives two identical entries, which is harmless.
func AccountTag(k AccountKey, seq uint64) [32]byte {
	m := hmac.New(sha256.New, k[:])
	m.Write([]byte(labelAccountTag))
	m.Write(binary.BigEndian.AppendUint64(nil, seq))
	var t [32]byte
	copy(t[:], m.Sum(nil))
	return t
}

// Publisher appends a record to a verifiable log and returns its receipt once
// the entry is covered by a published, witnessed checkpoint.
type Publisher interface {
	Publish(ctx context.Context, r Record) (*Receipt, error)
}

// Head reports the latest witnessed checkpoint of a log, as a signed note.
type Head interface {
	Checkpoint(ctx context.Context) ([]byte, error)
}

// ReceiptVerifier checks a receipt for a record offline.
type ReceiptVerifier interface {
	Verify(rc *Receipt, r Record) (Checkpoint, error)
}

// Adapter is what the key directory needs from the chain: publish, verify,
// and the current head.
type Adapter interface {
	Publisher
	Head
	ReceiptVerifier
}

// Anchorer anchors a signed checkpoint on a blockchain and reports the
// transaction that holds it.
type Anchorer interface {
	Anchor(ctx context.Context, signedCheckpoint []byte) (AnchorRef, error)
}

// AnchorRef names the transaction that anchored a checkpoint on a chain.
type AnchorRef struct {
	// Chain names the chain, e.g. "cardano:preprod" or "evm:1337".
	Chain string
	// TxID is the transaction ID in the chain's usual hex form.
	TxID string
	// Size and Root are the anchored checkpoint's tree size and root hash.
	Size uint64
	Root []byte
}
