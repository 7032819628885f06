// Package safety computes a conversation's safety number: a 60-digit string
// and a compact QR payload that two people compare to make sure no one sits
// between them. It changes whenever any member's device key changes.
//
// It follows Signal's numeric-fingerprint discipline: each party's
// fingerprint is an iterated SHA-512 over a version, the party's identity and
// its keys (here: the account ID and all its device public keys, sorted and
// length-framed); the conversation combines the parties in a fixed order. A
// 1:1 conversation shows the familiar two halves of 30 digits; a group shows
// 60 digits of one hash over all members. See docs/PROTOCOL.md section 3.
package safety

import (
	"bytes"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
)

const (
	// Iterations is the number of SHA-512 iterations of a party
	// fingerprint; the same work factor as Signal's.
	Iterations = 5200
	// PayloadVersion is the version byte of the QR payload.
	PayloadVersion = 1
	// PayloadPurpose is the second byte of the QR payload ('S'), which
	// tells a scanner it is a safety number.
	PayloadPurpose = 'S'
	// PayloadSize is the size of a version 1 QR payload.
	PayloadSize = 3 + 2*payloadHashSize
	// DigitsLen is the number of digits of a safety number.
	DigitsLen = 60

	kindPair  = 1
	kindGroup = 2

	payloadHashSize = 32

	// Limits on the inputs, so one conversation cannot make the client do
	// unbounded work.
	maxIDSize      = 256
	maxKeySize     = 4096
	maxKeysPerUser = 256
	maxParties     = 4096

	labelGroup = "gridchat/v1/safety-number/group"
)

// fingerprintVersion is the 2-byte version prefixed to a party's iterated
// hash; Signal's uses 0x0000.
var fingerprintVersion = []byte{0x00, 0x01}

// ErrBadPayload reports a scanned payload that is malformed.
var ErrBadPayload = errors.New("safety: bad QR payload")

// ErrVersion matches a *VersionError.
var ErrVersion = errors.New("safety: unsupported payload version")

// ErrBadParty reports invalid input parties: an empty or oversized ID, no
// keys, a duplicated key or party, or too many of them.
var ErrBadParty = errors.New("safety: bad party")

// VersionError reports a scanned payload of another version; the other
// client must be updated (or this one).
type VersionError struct {
	// Got is the scanned payload's version; Want is ours.
	Got, Want int
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("safety: payload version %d, want %d", e.Got, e.Want)
}

// Is makes errors.Is(err, ErrVersion) true for a *VersionError.
func (e *VersionError) Is(target error) bool { return target == ErrVersion }

// Party is one member of a conversation: its account (user) ID and the
// public keys of all its current devices, as bytes.
type Party struct {
	// ID is the account ID.
	ID []byte
	// DeviceKeys are the public keys of the account's devices, in any
	// order.
	DeviceKeys [][]byte
}

// iteratedHash is Signal's fingerprint iteration: h = SHA-512(version || key
// || id || key), then iterations-1 times h = SHA-512(h || key).
func iteratedHash(version, id, key []byte, iterations int) [sha512.Size]byte {
	h := sha512.New()
	h.Write(version)
	h.Write(key)
	h.Write(id)
	h.Write(key)
	var out [sha512.Size]byte
	h.Sum(out[:0])
	for i := 1; i < iterations; i++ {
		h.Reset()
		h.Write(out[:])
		h.Write(key)
		h.Sum(out[:0])
	}
	return out
}

func appendLV(dst, b []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(b)))
	return append(dst, b...)
}

// fingerprint returns a party's 64-byte fingerprint: the iterated hash with
// id = framed ID and key = count || framed keys in ascending byte order.
func fingerprint(p Party) ([sha512.Size]byte, error) {
	var zero [sha512.Size]byte
	if len(p.ID) == 0 || len(p.ID) > maxIDSize {
		return zero, fmt.Errorf("safety: party ID of %d bytes: %w", len(p.ID), ErrBadParty)
	}
	if len(p.DeviceKeys) == 0 || len(p.DeviceKeys) > maxKeysPerUser {
		return zero, fmt.Errorf("safety: party %x: %d device keys: %w", p.ID, len(p.DeviceKeys), ErrBadParty)
	}
	keys := slices.Clone(p.DeviceKeys)
	slices.SortFunc(keys, bytes.Compare)
	framed := binary.BigEndian.AppendUint32(nil, uint32(len(keys)))
	for i, k := range keys {
		if len(k) == 0 || len(k) > maxKeySize {
			return zero, fmt.Errorf("safety: party %x: key of %d bytes: %w", p.ID, len(k), ErrBadParty)
		}
		if i > 0 && bytes.Equal(k, keys[i-1]) {
			return zero, fmt.Errorf("safety: party %x: duplicate device key: %w", p.ID, ErrBadParty)
		}
		framed = appendLV(framed, k)
	}
	return iteratedHash(fingerprintVersion, appendLV(nil, p.ID), framed, Iterations), nil
}

// digits renders each 5-byte chunk of b as a 5-digit number (big-endian
// integer mod 100000), as Signal does.
func digits(b []byte) string {
	var sb strings.Builder
	for i := 0; i+5 <= len(b); i += 5 {
		var x uint64
		for _, c := range b[i : i+5] {
			x = x<<8 | uint64(c)
		}
		fmt.Fprintf(&sb, "%05d", x%100000)
	}
	return sb.String()
}

// pairDigits is Signal's display: 30 digits per party, the smaller string
// first.
func pairDigits(a, b []byte) string {
	da, db := digits(a[:30]), digits(b[:30])
	if db < da {
		da, db = db, da
	}
	return da + db
}

// Number is a conversation's safety number as seen from the local party.
type Number struct {
	kind     byte
	digits   string
	local    []byte   // local party's fingerprint, first 32 bytes
	remote   []byte   // pair: the other party's fingerprint, first 32 bytes
	combined []byte   // group: first 32 bytes of the combined hash
	others   [][]byte // group: the other parties' fingerprints, first 32 bytes
}

// New computes the safety number of a conversation between local and the
// other parties. With exactly one other party it is the 1:1 construction;
// otherwise (a group, or a conversation with only one's own devices) it is
// the group construction. Party IDs must be distinct.
func New(local Party, others ...Party) (*Number, error) {
	if len(others)+1 > maxParties {
		return nil, fmt.Errorf("safety: %d parties: %w", len(others)+1, ErrBadParty)
	}
	lfp, err := fingerprint(local)
	if err != nil {
		return nil, err
	}
	type member struct {
		id []byte
		fp [sha512.Size]byte
	}
	members := []member{{local.ID, lfp}}
	for _, p := range others {
		fp, err := fingerprint(p)
		if err != nil {
			return nil, err
		}
		members = append(members, member{p.ID, fp})
	}
	remote := members[len(members)-1].fp // the other party, for 1:1
	slices.SortFunc(members, func(a, b member) int { return bytes.Compare(a.id, b.id) })
	for i := 1; i < len(members); i++ {
		if bytes.Equal(members[i].id, members[i-1].id) {
			return nil, fmt.Errorf("safety: party %x twice: %w", members[i].id, ErrBadParty)
		}
	}
	n := &Number{local: bytes.Clone(lfp[:payloadHashSize])}
	if len(others) == 1 {
		n.kind = kindPair
		n.remote = bytes.Clone(remote[:payloadHashSize])
		n.digits = pairDigits(lfp[:], remote[:])
		return n, nil
	}
	h := sha512.New()
	h.Write(appendLV(nil, []byte(labelGroup)))
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(members))))
	for _, m := range members {
		h.Write(appendLV(nil, m.id))
		h.Write(m.fp[:])
		if !bytes.Equal(m.id, local.ID) {
			n.others = append(n.others, bytes.Clone(m.fp[:payloadHashSize]))
		}
	}
	sum := h.Sum(nil)
	n.kind = kindGroup
	n.combined = sum[:payloadHashSize]
	n.digits = digits(sum[:DigitsLen])
	return n, nil
}

// Digits returns the 60 digits without separators.
func (n *Number) Digits() string { return n.digits }

// String returns the digits in 12 groups of 5 separated by spaces.
func (n *Number) String() string {
	g := make([]string, 0, DigitsLen/5)
	for i := 0; i < len(n.digits); i += 5 {
		g = append(g, n.digits[i:i+5])
	}
	return strings.Join(g, " ")
}

// QRPayload returns the binary payload to show as a QR code: version,
// purpose, kind, then for 1:1 the local and remote fingerprint prefixes, and
// for a group the combined hash prefix and the local fingerprint prefix.
func (n *Number) QRPayload() []byte {
	b := make([]byte, 0, PayloadSize)
	b = append(b, PayloadVersion, PayloadPurpose, n.kind)
	if n.kind == kindPair {
		b = append(b, n.local...)
		return append(b, n.remote...)
	}
	b = append(b, n.combined...)
	return append(b, n.local...)
}

// Compare checks a payload scanned from the other device against mine. It
// returns true only if both sides computed the same safety number and the
// payload was made by another party of the conversation: scanning one's own
// code does not match, except in a conversation among one account's own
// devices, where both sides are the same party. It returns a *VersionError
// for another version and ErrBadPayload for a malformed payload.
func Compare(scanned []byte, mine *Number) (match bool, err error) {
	if len(scanned) == 0 {
		return false, fmt.Errorf("safety: compare: empty payload: %w", ErrBadPayload)
	}
	if scanned[0] != PayloadVersion {
		return false, fmt.Errorf("safety: compare: %w", &VersionError{Got: int(scanned[0]), Want: PayloadVersion})
	}
	if len(scanned) != PayloadSize {
		return false, fmt.Errorf("safety: compare: %d bytes, want %d: %w", len(scanned), PayloadSize, ErrBadPayload)
	}
	if scanned[1] != PayloadPurpose {
		return false, fmt.Errorf("safety: compare: purpose %#x: %w", scanned[1], ErrBadPayload)
	}
	kind := scanned[2]
	if kind != kindPair && kind != kindGroup {
		return false, fmt.Errorf("safety: compare: kind %d: %w", kind, ErrBadPayload)
	}
	if kind != mine.kind {
		return false, nil
	}
	first, second := scanned[3:3+payloadHashSize], scanned[3+payloadHashSize:]
	if kind == kindPair {
		ok := subtle.ConstantTimeCompare(first, mine.remote) & subtle.ConstantTimeCompare(second, mine.local)
		return ok == 1, nil
	}
	member := 0
	for _, o := range mine.others {
		member |= subtle.ConstantTimeCompare(second, o)
	}
	if len(mine.others) == 0 {
		// A conversation among one account's own devices: both devices
		// are the same party, so the shower is the local party.
		member = subtle.ConstantTimeCompare(second, mine.local)
	}
	return subtle.ConstantTimeCompare(first, mine.combined)&member == 1, nil
}
