package wire

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// This file is the wire's own strict JSON reader and the hand-written codecs of the bodies on the message path
// (send, envelope, ack and their answers). A frame is validated in one pass by scanValue, which runs through
// long base64 strings several times faster than encoding/json's state machine, and a body on the message path
// is decoded member by member without reflection. Anything the reader does not handle itself (escaped strings)
// it hands to encoding/json, so both read the same values; it is stricter than encoding/json in what it
// accepts: member names match exactly (not case-insensitively), no name may appear twice in one object,
// strings must be valid UTF-8 and values may nest at most MaxJSONDepth deep.

// MaxJSONDepth is the deepest nesting of arrays and objects a frame may have.
const MaxJSONDepth = 64

var errJSONDepth = fmt.Errorf("JSON nested deeper than %d", MaxJSONDepth)

// scanValue returns the end of the JSON value that starts at data[i] (leading whitespace skipped), validating
// it strictly, or an error that says what is wrong.
func scanValue(data []byte, i, depth int) (int, error) {
	i = skipSpace(data, i)
	if i >= len(data) {
		return i, errors.New("unexpected end of JSON")
	}
	switch c := data[i]; {
	case c == '"':
		end, _, err := scanString(data, i)
		return end, err
	case c == '{':
		if depth >= MaxJSONDepth {
			return i, errJSONDepth
		}
		i = skipSpace(data, i+1)
		if i < len(data) && data[i] == '}' {
			return i + 1, nil
		}
		for {
			if i >= len(data) || data[i] != '"' {
				return i, errors.New("object member name is not a string")
			}
			end, _, err := scanString(data, i)
			if err != nil {
				return end, err
			}
			i = skipSpace(data, end)
			if i >= len(data) || data[i] != ':' {
				return i, errors.New("missing ':' after object member name")
			}
			if i, err = scanValue(data, i+1, depth+1); err != nil {
				return i, err
			}
			i = skipSpace(data, i)
			if i >= len(data) {
				return i, errors.New("unterminated object")
			}
			if data[i] == '}' {
				return i + 1, nil
			}
			if data[i] != ',' {
				return i, errors.New("missing ',' between object members")
			}
			i = skipSpace(data, i+1)
		}
	case c == '[':
		if depth >= MaxJSONDepth {
			return i, errJSONDepth
		}
		i = skipSpace(data, i+1)
		if i < len(data) && data[i] == ']' {
			return i + 1, nil
		}
		for {
			var err error
			if i, err = scanValue(data, i, depth+1); err != nil {
				return i, err
			}
			i = skipSpace(data, i)
			if i >= len(data) {
				return i, errors.New("unterminated array")
			}
			if data[i] == ']' {
				return i + 1, nil
			}
			if data[i] != ',' {
				return i, errors.New("missing ',' between array elements")
			}
			i++
		}
	case c == '-' || c >= '0' && c <= '9':
		return scanNumber(data, i)
	case c == 't':
		return scanLiteral(data, i, "true")
	case c == 'f':
		return scanLiteral(data, i, "false")
	case c == 'n':
		return scanLiteral(data, i, "null")
	default:
		return i, fmt.Errorf("invalid character %q looking for a value", c)
	}
}

// plain marks the bytes a string may hold as they are: printable ASCII other than '"' and '\\'.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// plain8 reports whether all eight bytes packed in x are plain, with the bit tricks of "Bit Twiddling Hacks"
// (determine if a word has a zero byte, or a byte less than n): no byte below 0x20, at or above 0x80, '"' or '\\'.
func plain8(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	below := (x - 0x20*ones) &^ x                      // high bit set where a byte is below 0x20 (or was >= 0x80)
	quote := (x ^ '"'*ones - ones) &^ (x ^ '"'*ones)   // high bit set where a byte is '"'
	slash := (x ^ '\\'*ones - ones) &^ (x ^ '\\'*ones) // ... where a byte is '\\'
	return (below|quote|slash|x)&highs == 0
}

// scanString returns the end of the string that starts with the quote at data[i] and whether it holds escapes.
func scanString(data []byte, i int) (end int, escaped bool, err error) {
	start := i + 1
	ascii := true
	for i = start; i < len(data); i++ {
		// Most of a frame is base64: run through plain bytes eight at a time.
		for i+8 <= len(data) && plain8(binary.LittleEndian.Uint64(data[i:])) {
			i += 8
		}
		for i < len(data) && plain[data[i]] {
			i++
		}
		if i >= len(data) {
			break
		}
		switch c := data[i]; {
		case c == '"':
			if !ascii && !utf8.Valid(data[start:i]) {
				return i, escaped, errors.New("string is not valid UTF-8")
			}
			return i + 1, escaped, nil
		case c == '\\':
			escaped = true
			i++
			if i >= len(data) {
				return i, escaped, errors.New("unterminated string")
			}
			switch data[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(data) {
					return i, escaped, errors.New("unterminated string")
				}
				for _, h := range data[i+1 : i+5] {
					if !isHex(h) {
						return i, escaped, errors.New(`invalid \u escape`)
					}
				}
				i += 4
			default:
				return i, escaped, fmt.Errorf("invalid escape %q in string", data[i])
			}
		case c < 0x20:
			return i, escaped, errors.New("control character in string")
		default: // c >= 0x80
			ascii = false
		}
	}
	return i, escaped, errors.New("unterminated string")
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// scanNumber returns the end of the number at data[i]: -? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)?
func scanNumber(data []byte, i int) (int, error) {
	bad := errors.New("invalid number")
	if data[i] == '-' {
		i++
	}
	switch {
	case i < len(data) && data[i] == '0':
		i++
	case i < len(data) && isDigit(data[i]):
		for i < len(data) && isDigit(data[i]) {
			i++
		}
	default:
		return i, bad
	}
	if i < len(data) && data[i] == '.' {
		i++
		if i >= len(data) || !isDigit(data[i]) {
			return i, bad
		}
		for i < len(data) && isDigit(data[i]) {
			i++
		}
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if i >= len(data) || !isDigit(data[i]) {
			return i, bad
		}
		for i < len(data) && isDigit(data[i]) {
			i++
		}
	}
	return i, nil
}

func scanLiteral(data []byte, i int, lit string) (int, error) {
	if len(data)-i < len(lit) || string(data[i:i+len(lit)]) != lit {
		return i, fmt.Errorf("invalid literal, want %s", lit)
	}
	return i + len(lit), nil
}

// checkJSON reports whether data is exactly one valid JSON value, surrounded by nothing but whitespace.
func checkJSON(data []byte) error {
	end, err := scanValue(data, 0, 0)
	if err != nil {
		return err
	}
	if skipSpace(data, end) != len(data) {
		return errors.New("data after the JSON value")
	}
	return nil
}

// members walks the JSON object that is the whole of data (whitespace around it allowed), validating it, and
// calls fn with the index in names of each member's name and the member's raw value. A name that is not in
// names, a name that appears twice and a name with escapes are refused. At most 64 names.
func members(data []byte, names []string, fn func(k int, val []byte) error) error {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return errors.New("not a JSON object")
	}
	var seen uint64
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		i++
	} else {
		for {
			if i >= len(data) || data[i] != '"' {
				return errors.New("object member name is not a string")
			}
			end, escaped, err := scanString(data, i)
			if err != nil {
				return err
			}
			name := data[i+1 : end-1]
			if escaped {
				return fmt.Errorf("escaped field name %q", name)
			}
			k := -1
			for j, n := range names {
				if string(name) == n {
					k = j
					break
				}
			}
			if k < 0 {
				return fmt.Errorf("unknown field %q", name)
			}
			if seen&(1<<k) != 0 {
				return fmt.Errorf("duplicate field %q", name)
			}
			seen |= 1 << k
			i = skipSpace(data, end)
			if i >= len(data) || data[i] != ':' {
				return errors.New("missing ':' after object member name")
			}
			vstart := skipSpace(data, i+1)
			vend, err := scanValue(data, vstart, 1)
			if err != nil {
				return fmt.Errorf("field %q: %w", name, err)
			}
			if err := fn(k, data[vstart:vend]); err != nil {
				return fmt.Errorf("field %q: %w", name, err)
			}
			i = skipSpace(data, vend)
			if i >= len(data) {
				return errors.New("unterminated object")
			}
			if data[i] == '}' {
				i++
				break
			}
			if data[i] != ',' {
				return errors.New("missing ',' between object members")
			}
			i = skipSpace(data, i+1)
		}
	}
	if skipSpace(data, i) != len(data) {
		return errors.New("data after the JSON object")
	}
	return nil
}

// elements calls fn with each element of the JSON array val, which scanValue has validated. A null val has no
// elements.
func elements(val []byte, fn func(elem []byte) error) error {
	if string(val) == "null" {
		return nil
	}
	if val[0] != '[' {
		return errors.New("not an array")
	}
	i := skipSpace(val, 1)
	if val[i] == ']' {
		return nil
	}
	for {
		end, err := scanValue(val, i, 1)
		if err != nil {
			return err
		}
		if err := fn(val[i:end]); err != nil {
			return err
		}
		i = skipSpace(val, end)
		if val[i] == ']' {
			return nil
		}
		i = skipSpace(val, i+1) // past ','
	}
}

// jsonBytes decodes a validated JSON value as encoding/json decodes a []byte: null is nil, a string is standard
// base64 with padding.
func jsonBytes(val []byte) ([]byte, error) {
	switch {
	case string(val) == "null":
		return nil, nil
	case val[0] != '"':
		return nil, errors.New("not a base64 string")
	}
	s := val[1 : len(val)-1]
	if bytes.IndexByte(s, '\\') >= 0 {
		var b []byte
		err := json.Unmarshal(val, &b)
		return b, err
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
	n, err := base64.StdEncoding.Decode(out, s)
	if err != nil {
		return nil, fmt.Errorf("bad base64: %w", err)
	}
	return out[:n], nil
}

// jsonBytesList decodes a validated JSON value as encoding/json decodes a [][]byte: null is nil, [] is empty
// and not nil, each element as jsonBytes.
func jsonBytesList(val []byte) ([][]byte, error) {
	var list [][]byte
	err := elements(val, func(e []byte) error {
		b, err := jsonBytes(e)
		list = append(list, b)
		return err
	})
	if err == nil && list == nil && string(val) != "null" {
		list = [][]byte{}
	}
	return list, err
}

// jsonString decodes a validated JSON value as a string; null leaves it empty.
func jsonString(val []byte) (string, error) {
	switch {
	case string(val) == "null":
		return "", nil
	case val[0] != '"':
		return "", errors.New("not a string")
	}
	if bytes.IndexByte(val, '\\') >= 0 {
		var s string
		err := json.Unmarshal(val, &s)
		return s, err
	}
	return string(val[1 : len(val)-1]), nil
}

// jsonInt decodes a validated JSON value as an integer of bits bits; null is 0.
func jsonInt(val []byte, bits int) (int64, error) {
	if string(val) == "null" {
		return 0, nil
	}
	n, err := strconv.ParseInt(string(val), 10, bits)
	if err != nil {
		return 0, fmt.Errorf("not an integer of %d bits", bits)
	}
	return n, nil
}

// appendBytes appends b as encoding/json encodes a []byte: null when nil, else a base64 string.
func appendBytes(dst, b []byte) []byte {
	if b == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, '"')
	dst = base64.StdEncoding.AppendEncode(dst, b)
	return append(dst, '"')
}

// appendString appends s as encoding/json encodes a string.
func appendString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s) // a string always encodes
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// appendBytesList appends a [][]byte as encoding/json encodes it.
func appendBytesList(dst []byte, list [][]byte) []byte {
	if list == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, '[')
	for i, b := range list {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendBytes(dst, b)
	}
	return append(dst, ']')
}

func appendInt(dst []byte, n int64) []byte { return strconv.AppendInt(dst, n, 10) }

func base64Len(b []byte) int { return base64.StdEncoding.EncodedLen(len(b)) + 2 }

// fastBody is a body type with its own JSON encoder, byte for byte what encoding/json would write.
type fastBody interface {
	appendJSON(dst []byte) []byte
	jsonSize() int // roughly how many bytes appendJSON appends
}

// fastDecoder is a body type with its own strict JSON decoder (see the top of this file).
type fastDecoder interface {
	decodeJSON(data []byte) error
}
