package backup

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"io"
	"strings"
)

// Recovery key text format: the 32-byte key in Crockford base32 (52
// symbols), then 4 check symbols (the first 20 bits of a labelled SHA-256 of
// the key), shown in groups of 4 separated by dashes.
const (
	recoveryAlphabet   = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	recoveryKeySymbols = 52
	recoveryCheckSyms  = 4
	labelRecoveryCheck = "gridchat/v1/backup/recovery-key-check"
)

// RecoveryKey is a random 256-bit key printed for the user as an
// alternative way to open backups.
type RecoveryKey struct {
	key [32]byte
}

// NewRecoveryKey makes a random recovery key; rand nil means crypto/rand.
func NewRecoveryKey(r io.Reader) (*RecoveryKey, error) {
	if r == nil {
		r = rand.Reader
	}
	rk := &RecoveryKey{}
	if _, err := io.ReadFull(r, rk.key[:]); err != nil {
		return nil, fmt.Errorf("backup: new recovery key: %w", err)
	}
	return rk, nil
}

func recoveryEncoding() *base32.Encoding {
	return base32.NewEncoding(recoveryAlphabet).WithPadding(base32.NoPadding)
}

func recoveryCheck(key []byte) string {
	h := sha256.New()
	h.Write([]byte(labelRecoveryCheck))
	h.Write(key)
	sum := h.Sum(nil)
	return recoveryEncoding().EncodeToString(sum[:5])[:recoveryCheckSyms]
}

// String returns the printable form, e.g. "ABCD-EFGH-...", 14 groups of 4.
func (rk *RecoveryKey) String() string {
	s := recoveryEncoding().EncodeToString(rk.key[:]) + recoveryCheck(rk.key[:])
	var b strings.Builder
	for i := 0; i < len(s); i += 4 {
		if i > 0 {
			b.WriteByte('-')
		}
		b.WriteString(s[i : i+4])
	}
	return b.String()
}

// Destroy zeroes the key.
func (rk *RecoveryKey) Destroy() { clear(rk.key[:]) }

// ParseRecoveryKey reads a recovery key as typed by a person: case,
// spaces and dashes do not matter and O, I, L read as 0, 1, 1. A typo
// fails the checksum with ErrBadRecoveryKey.
func ParseRecoveryKey(s string) (*RecoveryKey, error) {
	const op = "backup: parse recovery key"
	if len(s) > 256 {
		return nil, fmt.Errorf("%s: too long: %w", op, ErrBadRecoveryKey)
	}
	var sym []byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '-' || c == ' ':
			continue
		case 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		}
		switch c {
		case 'O':
			c = '0'
		case 'I', 'L':
			c = '1'
		}
		if strings.IndexByte(recoveryAlphabet, c) < 0 {
			return nil, fmt.Errorf("%s: symbol %q: %w", op, s[i], ErrBadRecoveryKey)
		}
		sym = append(sym, c)
	}
	if len(sym) != recoveryKeySymbols+recoveryCheckSyms {
		return nil, fmt.Errorf("%s: %d symbols: %w", op, len(sym), ErrBadRecoveryKey)
	}
	enc := recoveryEncoding()
	body := string(sym[:recoveryKeySymbols])
	key, err := enc.DecodeString(body)
	if err != nil || len(key) != 32 || enc.EncodeToString(key) != body {
		return nil, fmt.Errorf("%s: %w", op, ErrBadRecoveryKey)
	}
	if recoveryCheck(key) != string(sym[recoveryKeySymbols:]) {
		return nil, fmt.Errorf("%s: checksum: %w", op, ErrBadRecoveryKey)
	}
	rk := &RecoveryKey{}
	copy(rk.key[:], key)
	clear(key)
	return rk, nil
}
