package client

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
)

// Forward compatibility of payloads (docs/PROTOCOL.md §9.3 "Extensions"), client envelopes (§9.1) and
// group-state records (§9.5). The struct decoder skips map keys it has no field for; scanKeys, run before it,
// decides which of them may be skipped: a non-negative integer key is an elective extension (ignored, but its
// value must be CBOR within the codec's limits, duplicate map keys included), a negative one is a
// must-understand extension (this version knows none, so the map is refused, naming the key), and any other
// key is refused. decodeExtensible runs both.

// payloadMaxNesting is the most nested arrays and maps a payload, an envelope or a group-state record (or
// its body) holds, its own map counting as one.
const payloadMaxNesting = 6

// schemas are the maps the codec decodes with decodeExtensible.
type schemas struct {
	payloadSchema     *mapSchema // §9.3, with its attachment, resend and history bodies
	envelopeSchema    *mapSchema // §9.1, with its fragment
	groupRecordSchema *mapSchema // §9.5 group_record, not signed
	groupBodySchema   *mapSchema // §9.5 group_body, signed
}

func newSchemas() (schemas, error) {
	var s schemas
	var err error
	for _, x := range []struct {
		to   **mapSchema
		name string
		bad  error
		t    reflect.Type
	}{
		{&s.payloadSchema, "payload", ErrBadPayload, reflect.TypeFor[payload]()},
		{&s.envelopeSchema, "envelope", ErrBadPayload, reflect.TypeFor[envelope]()},
		{&s.groupRecordSchema, "group-state record", ErrBadGroupState, reflect.TypeFor[signedGroup]()},
		{&s.groupBodySchema, "group-state body", ErrBadGroupState, reflect.TypeFor[groupBody]()},
	} {
		if *x.to, err = schemaOf(x.name, x.bad, x.t); err != nil {
			return schemas{}, err
		}
	}
	return s, nil
}

// mapSchema is the integer keys a struct decodes from a CBOR map, and for a key whose value is itself a map
// decoded into a struct (a body such as the attachment), that map's schema.
type mapSchema struct {
	name   string
	bad    error          // what a refusal wraps (ErrBadPayload, ErrBadGroupState)
	known  uint64         // bit k set: key k (< 64) is a field
	bodies [64]*mapSchema // by key: the schema of a body
}

// schemaOf reads the schema of struct type t from its `cbor:"N,keyasint"` tags; refusals wrap bad.
func schemaOf(name string, bad error, t reflect.Type) (*mapSchema, error) {
	s := &mapSchema{name: name, bad: bad}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue // not encoded
		}
		tag, _, _ := strings.Cut(f.Tag.Get("cbor"), ",")
		k, err := strconv.ParseUint(tag, 10, 6)
		if err != nil || !strings.Contains(f.Tag.Get("cbor"), "keyasint") {
			return nil, fmt.Errorf("client: %s schema: field %s.%s has no integer key below 64", name, t.Name(), f.Name)
		}
		s.known |= 1 << k
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct {
			body, err := schemaOf(fmt.Sprintf("%s key %d", name, k), bad, ft)
			if err != nil {
				return nil, err
			}
			s.bodies[k] = body
		}
	}
	return s, nil
}

// keyScan is what scanKeys learns of a map beyond what the struct decoder keeps.
type keyScan struct {
	present  uint64   // bit k set: top-level key k (< 64) is present
	elective int      // top-level keys the schema does not know
	unknown  [][]byte // the array and map values of elective keys the schema does not know, each one data item
}

// decodeExtensible decodes the map b into v, a pointer to the struct s describes, ignoring the elective keys
// s does not know once their values are checked, and refusing a must-understand key or a non-integer key.
// Every error wraps s.bad.
func (c codec) decodeExtensible(s *mapSchema, b []byte, v any) (keyScan, error) {
	sc, err := s.scanKeys(b)
	if err != nil {
		return sc, err
	}
	if err := c.extDec.Unmarshal(b, v); err != nil {
		return sc, fmt.Errorf("%w: %s: %v", s.bad, s.name, err)
	}
	for _, u := range sc.unknown {
		// The struct decoder skipped the value; decoding it whole catches duplicate map keys inside it.
		var x any
		if err := c.dec.Unmarshal(u, &x); err != nil {
			return sc, fmt.Errorf("%w: %s: value of an elective key: %v", s.bad, s.name, err)
		}
	}
	return sc, nil
}

// scanKeys walks the map at the start of b (and the bodies inside it) as s describes it, checking every key
// and collecting the values of unknown elective keys. It reads only heads and skips strings without reading
// them, so it costs little beside the struct decoder; it refuses indefinite lengths and tags on the way but
// leaves the rest of well-formedness (trailing bytes, limits, duplicate keys) to the decoder that follows.
func (s *mapSchema) scanKeys(b []byte) (keyScan, error) {
	var sc keyScan
	_, err := s.scan(b, 0, 1, &sc, true)
	return sc, err
}

// scan checks the map at b[off:], at nesting level depth, and returns the offset after it; top marks the
// payload's own map, whose keys it records in sc.present.
func (s *mapSchema) scan(b []byte, off, depth int, sc *keyScan, top bool) (int, error) {
	major, n, off, err := cborHead(b, off)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", s.bad, err)
	}
	if major != cborMap {
		return 0, fmt.Errorf("%w: %s is not a map", s.bad, s.name)
	}
	if n > uint64(len(b)-off)/2 {
		return 0, fmt.Errorf("%w: %s truncated", s.bad, s.name)
	}
	for range n {
		kMajor, k, next, err := cborHead(b, off)
		if err != nil {
			return 0, fmt.Errorf("%w: %v", s.bad, err)
		}
		off = next
		switch {
		case kMajor == cborNegInt && k <= math.MaxInt64:
			return 0, fmt.Errorf("%w: %s has must-understand key %d, unknown to this client", s.bad, s.name, -1-int64(k))
		case kMajor == cborNegInt || (kMajor == cborUint && k > math.MaxInt64):
			return 0, fmt.Errorf("%w: %s has a key outside -2^63 … 2^63-1", s.bad, s.name)
		case kMajor != cborUint:
			return 0, fmt.Errorf("%w: %s has a key of CBOR major type %d, not an integer", s.bad, s.name, kMajor)
		}
		if top && k < 64 {
			sc.present |= 1 << k
		}
		if k < 64 && s.bodies[k] != nil {
			if off, err = s.bodies[k].scan(b, off, depth+1, sc, false); err != nil {
				return 0, err
			}
			continue
		}
		start := off
		if off, err = skipItem(b, off, depth+1); err != nil {
			return 0, fmt.Errorf("%w: %v", s.bad, err)
		}
		if k < 64 && s.known&(1<<k) != 0 {
			continue
		}
		if top {
			sc.elective++
		}
		// Only an array or a map can hide duplicate map keys from the struct decoder, which skips the value.
		if b[start]>>5 == cborArray || b[start]>>5 == cborMap {
			sc.unknown = append(sc.unknown, b[start:off])
		}
	}
	return off, nil
}

// CBOR major types.
const (
	cborUint   = 0
	cborNegInt = 1
	cborBytes  = 2
	cborText   = 3
	cborArray  = 4
	cborMap    = 5
	cborTag    = 6
)

var errTruncated = errors.New("truncated")

// cborHead reads the head of the data item at b[off:]: its major type, its argument, and the offset after the
// head. Indefinite lengths (and the reserved additional information 28–30) are refused. Its errors, and
// skipItem's, wrap no sentinel: scan wraps them in its schema's.
func cborHead(b []byte, off int) (major byte, arg uint64, next int, err error) {
	if off >= len(b) {
		return 0, 0, 0, errTruncated
	}
	major, ai := b[off]>>5, b[off]&0x1f
	off++
	if ai < 24 {
		return major, uint64(ai), off, nil
	}
	if ai > 27 {
		return 0, 0, 0, fmt.Errorf("indefinite length or reserved CBOR head 0x%02x", b[off-1])
	}
	size := 1 << (ai - 24)
	if len(b)-off < size {
		return 0, 0, 0, errTruncated
	}
	for _, c := range b[off : off+size] {
		arg = arg<<8 | uint64(c)
	}
	return major, arg, off + size, nil
}

// skipItem returns the offset after the data item at b[off:], which sits at nesting level depth.
func skipItem(b []byte, off, depth int) (int, error) {
	major, n, off, err := cborHead(b, off)
	if err != nil {
		return 0, err
	}
	switch major {
	case cborBytes, cborText:
		if n > uint64(len(b)-off) {
			return 0, errTruncated
		}
		return off + int(n), nil
	case cborTag:
		return 0, errors.New("CBOR tag")
	case cborArray, cborMap:
		if depth > payloadMaxNesting {
			return 0, fmt.Errorf("nested deeper than %d", payloadMaxNesting)
		}
		if major == cborMap {
			if n > uint64(len(b)-off)/2 {
				return 0, errTruncated
			}
			n *= 2
		}
		if n > uint64(len(b)-off) { // every item takes a byte at least
			return 0, errTruncated
		}
		for range n {
			if off, err = skipItem(b, off, depth+1); err != nil {
				return 0, err
			}
		}
	}
	return off, nil
}
