// Package link pairs a new device with an existing device of the same
// account.
//
// The old device (the host) shows an invitation, either as a QR payload
// (rendezvous ID and a 256-bit secret) or as a short code a person can type
// (a 5-symbol rendezvous and a 9-symbol secret with a check symbol). The new
// device (the joiner) parses either form into a Ticket. Both forms run the
// same protocol: CPace on ristretto255 with the secret as password, bound to
// the rendezvous ID and both roles, followed by key-confirmation MACs in both
// directions, and then AEAD-framed messages under the resulting session key.
// The gateway only relays opaque frames. See docs/PROTOCOL.md section 3.
package link

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Kind says which form of invitation a host offers.
type Kind uint8

const (
	// KindQR is an invitation shown as a QR payload with a 256-bit secret.
	KindQR Kind = 1
	// KindShortCode is an invitation shown as a short typed code.
	KindShortCode Kind = 2
)

// Wire constants of the QR payload and short code.
const (
	// QRVersion is the version byte of the link QR payload.
	QRVersion = 1
	// QRPurpose is the second byte of a link QR payload ('L'), which tells
	// a scanner that the payload is a link invitation.
	QRPurpose = 'L'
	// QRPayloadSize is the size of a version 1 link QR payload.
	QRPayloadSize = 2 + qrRendezvousSize + qrSecretSize + 8 + qrChecksumSize

	qrRendezvousSize = 16
	qrSecretSize     = 32
	qrChecksumSize   = 4

	// ShortCodeLen is the number of symbols of a short code without
	// separators: rendezvous, secret and one check symbol.
	ShortCodeLen       = shortRendezvousLen + shortSecretLen + 1
	shortRendezvousLen = 5
	shortSecretLen     = 9

	// DefaultLifetime is how long an invitation is valid.
	DefaultLifetime = 5 * time.Minute

	labelQRChecksum = "gridchat/v1/link-qr-checksum"
)

// shortAlphabet is Crockford's base32 alphabet: no I, L, O or U.
const shortAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// Options carry the injectable dependencies of this package. The zero value
// uses crypto/rand, time.Now and DefaultLifetime.
type Options struct {
	// Rand is the source of randomness.
	Rand io.Reader
	// Now returns the current time.
	Now func() time.Time
	// Lifetime is how long a host's invitation is valid (host side only).
	Lifetime time.Duration
}

func (o Options) withDefaults() Options {
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Lifetime <= 0 {
		o.Lifetime = DefaultLifetime
	}
	return o
}

// Ticket is what the joiner learns from a scanned QR payload or a typed
// short code: everything it needs to run the protocol.
type Ticket struct {
	// Kind is the form the ticket came from.
	Kind Kind
	// Rendezvous is the opaque rendezvous ID the gateway pairs the two
	// devices under: 16 bytes for KindQR, the 5 ASCII symbols for
	// KindShortCode.
	Rendezvous []byte
	// Password is the CPace password: the 32-byte secret for KindQR, the
	// 9 canonical ASCII symbols for KindShortCode.
	Password []byte
	// Expires is the invitation's expiry as carried by a QR payload; zero
	// for a short code, whose expiry only the host knows.
	Expires time.Time
}

func encodeQR(rendezvous, secret []byte, expires time.Time) []byte {
	b := make([]byte, 0, QRPayloadSize)
	b = append(b, QRVersion, QRPurpose)
	b = append(b, rendezvous...)
	b = append(b, secret...)
	b = binary.BigEndian.AppendUint64(b, uint64(expires.Unix()))
	return append(b, qrChecksum(b)...)
}

func qrChecksum(b []byte) []byte {
	h := sha256.New()
	h.Write([]byte(labelQRChecksum))
	h.Write(b)
	return h.Sum(nil)[:qrChecksumSize]
}

// ParseQRPayload decodes a scanned link QR payload. It returns ErrVersion for
// an unknown version and ErrBadPayload for anything else that is wrong.
func ParseQRPayload(b []byte) (Ticket, error) {
	if len(b) == 0 {
		return Ticket{}, fmt.Errorf("link: parse QR payload: empty: %w", ErrBadPayload)
	}
	if b[0] != QRVersion {
		return Ticket{}, fmt.Errorf("link: parse QR payload: version %d: %w", b[0], ErrVersion)
	}
	if len(b) != QRPayloadSize {
		return Ticket{}, fmt.Errorf("link: parse QR payload: %d bytes, want %d: %w", len(b), QRPayloadSize, ErrBadPayload)
	}
	if b[1] != QRPurpose {
		return Ticket{}, fmt.Errorf("link: parse QR payload: purpose %#x: %w", b[1], ErrBadPayload)
	}
	body, sum := b[:len(b)-qrChecksumSize], b[len(b)-qrChecksumSize:]
	if subtle.ConstantTimeCompare(sum, qrChecksum(body)) != 1 {
		return Ticket{}, fmt.Errorf("link: parse QR payload: checksum: %w", ErrBadPayload)
	}
	p := body[2:]
	exp := binary.BigEndian.Uint64(p[qrRendezvousSize+qrSecretSize:])
	if exp > 1<<62 {
		return Ticket{}, fmt.Errorf("link: parse QR payload: expiry out of range: %w", ErrBadPayload)
	}
	return Ticket{
		Kind:       KindQR,
		Rendezvous: bytes.Clone(p[:qrRendezvousSize]),
		Password:   bytes.Clone(p[qrRendezvousSize : qrRendezvousSize+qrSecretSize]),
		Expires:    time.Unix(int64(exp), 0),
	}, nil
}

// luhnCheck returns the check symbol value of the Luhn mod N algorithm over
// symbol values vals, for N = 32.
func luhnCheck(vals []int) int {
	const n = len(shortAlphabet)
	factor, sum := 2, 0
	for i := len(vals) - 1; i >= 0; i-- {
		addend := factor * vals[i]
		factor = 3 - factor
		sum += addend/n + addend%n
	}
	return (n - sum%n) % n
}

func symbolValue(c byte) int {
	switch c {
	case 'O':
		c = '0'
	case 'I', 'L':
		c = '1'
	}
	return strings.IndexByte(shortAlphabet, c)
}

// encodeShortCode renders rendezvous and secret symbols with their check
// symbol as "RRRRR-SSSSS-SSSSC".
func encodeShortCode(rendezvous, secret []byte) string {
	syms := append(bytes.Clone(rendezvous), secret...)
	vals := make([]int, len(syms))
	for i, c := range syms {
		vals[i] = symbolValue(c)
	}
	syms = append(syms, shortAlphabet[luhnCheck(vals)])
	return string(syms[0:5]) + "-" + string(syms[5:10]) + "-" + string(syms[10:15])
}

// ParseShortCode decodes a typed short code. Case, spaces and dashes do not
// matter, and O, I and L are read as 0, 1 and 1. It returns ErrBadCode for a
// wrong length, an unknown symbol or a failed check symbol.
func ParseShortCode(s string) (Ticket, error) {
	if len(s) > 64 {
		return Ticket{}, fmt.Errorf("link: parse short code: too long: %w", ErrBadCode)
	}
	var syms []byte
	var vals []int
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '-' || c == ' ' {
			continue
		}
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		v := symbolValue(c)
		if v < 0 {
			return Ticket{}, fmt.Errorf("link: parse short code: symbol %q: %w", s[i], ErrBadCode)
		}
		syms = append(syms, shortAlphabet[v])
		vals = append(vals, v)
	}
	if len(syms) != ShortCodeLen {
		return Ticket{}, fmt.Errorf("link: parse short code: %d symbols, want %d: %w", len(syms), ShortCodeLen, ErrBadCode)
	}
	if luhnCheck(vals[:ShortCodeLen-1]) != vals[ShortCodeLen-1] {
		return Ticket{}, fmt.Errorf("link: parse short code: check symbol: %w", ErrBadCode)
	}
	return Ticket{
		Kind:       KindShortCode,
		Rendezvous: syms[:shortRendezvousLen:shortRendezvousLen],
		Password:   bytes.Clone(syms[shortRendezvousLen : ShortCodeLen-1]),
	}, nil
}

func randomSymbols(r io.Reader, n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	for i := range b {
		b[i] = shortAlphabet[b[i]&31]
	}
	return b, nil
}

// Typed errors of this package; match them with errors.Is.
var (
	// ErrBadPayload reports a malformed or corrupted link QR payload.
	ErrBadPayload = errors.New("link: bad QR payload")
	// ErrBadCode reports a malformed short code or one whose check symbol
	// is wrong (a typo).
	ErrBadCode = errors.New("link: bad short code")
	// ErrVersion reports a payload or frame of an unsupported version.
	ErrVersion = errors.New("link: unsupported version")
	// ErrExpired reports an invitation past its lifetime.
	ErrExpired = errors.New("link: invitation expired")
	// ErrWrongCode reports a failed key confirmation: the other side used
	// a different code, or a frame of the handshake was altered.
	ErrWrongCode = errors.New("link: wrong code or altered handshake")
	// ErrBadFrame reports a malformed frame or one of an unexpected type.
	ErrBadFrame = errors.New("link: bad frame")
	// ErrInvalidShare reports a CPace share that is not a valid group
	// element or yields the neutral element.
	ErrInvalidShare = errors.New("link: invalid key-exchange share")
	// ErrUsed reports a second use of a single-use state.
	ErrUsed = errors.New("link: state already used")
	// ErrAborted reports use of a state that failed before; a failed run
	// is never resumed.
	ErrAborted = errors.New("link: run aborted after an earlier failure")
	// ErrDecrypt reports a data frame that fails authentication: altered,
	// from another session, or reflected back to its sender.
	ErrDecrypt = errors.New("link: data frame authentication failed")
	// ErrSequence reports a data frame out of sequence: replayed, reordered
	// or dropped.
	ErrSequence = errors.New("link: data frame out of sequence")
)
