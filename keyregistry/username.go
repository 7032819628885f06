package keyregistry

import (
	"fmt"
	"strings"
)

// Username limits. A normalized username is 3 to 32 bytes of lowercase ASCII
// letters and digits, with single separators ('.', '_' or '-') allowed between
// them. Only ASCII is accepted so that no two distinct names look alike.
const (
	MinUsernameLen = 3
	MaxUsernameLen = 32
)

// NormalizeUsername returns the canonical form of name: ASCII letters folded to
// lowercase. It returns ErrUsernameInvalid if the result is not a valid
// username (length, alphabet, separator placement).
func NormalizeUsername(name string) (string, error) {
	if len(name) < MinUsernameLen || len(name) > MaxUsernameLen {
		return "", fmt.Errorf("%w: length %d outside %d..%d", ErrUsernameInvalid, len(name), MinUsernameLen, MaxUsernameLen)
	}
	var b strings.Builder
	b.Grow(len(name))
	prevSep := true // a name may not start with a separator
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
			prevSep = false
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			prevSep = false
		case c == '.' || c == '_' || c == '-':
			if prevSep {
				return "", fmt.Errorf("%w: separator at %d", ErrUsernameInvalid, i)
			}
			prevSep = true
		default:
			return "", fmt.Errorf("%w: byte %#x at %d not allowed", ErrUsernameInvalid, c, i)
		}
		b.WriteByte(c)
	}
	if prevSep {
		return "", fmt.Errorf("%w: ends with a separator", ErrUsernameInvalid)
	}
	return b.String(), nil
}

// isNormalUsername reports whether name is already in canonical form.
func isNormalUsername(name string) bool {
	n, err := NormalizeUsername(name)
	return err == nil && n == name
}
