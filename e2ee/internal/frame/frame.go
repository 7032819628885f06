// Package frame holds the byte-level framing shared by every e2ee format: big-endian fixed-width integers,
// uint32-length-prefixed variable fields, strict readers that refuse truncation and trailing bytes, and
// domain-separated hashing.
package frame

import (
	"crypto/sha256"

	"golang.org/x/crypto/cryptobyte"
)

// Builder accumulates an encoding. It is a thin wrapper over cryptobyte.Builder that writes variable-length
// fields with a big-endian uint32 length prefix.
type Builder struct {
	b cryptobyte.Builder
}

// NewBuilder returns a Builder whose buffer starts with capacity n.
func NewBuilder(n int) *Builder {
	return &Builder{b: *cryptobyte.NewBuilder(make([]byte, 0, n))}
}

// U8 appends one byte.
func (b *Builder) U8(v uint8) { b.b.AddUint8(v) }

// U16 appends a big-endian uint16.
func (b *Builder) U16(v uint16) { b.b.AddUint16(v) }

// U32 appends a big-endian uint32.
func (b *Builder) U32(v uint32) { b.b.AddUint32(v) }

// U64 appends a big-endian uint64.
func (b *Builder) U64(v uint64) { b.b.AddUint64(v) }

// Raw appends p as is (a fixed-size field).
func (b *Builder) Raw(p []byte) { b.b.AddBytes(p) }

// Var appends p preceded by its length as a big-endian uint32.
func (b *Builder) Var(p []byte) {
	b.b.AddUint32LengthPrefixed(func(c *cryptobyte.Builder) { c.AddBytes(p) })
}

// Bytes returns the encoding built so far, or an error if a field overflowed its length prefix.
func (b *Builder) Bytes() ([]byte, error) { return b.b.Bytes() }

// Reader consumes an encoding strictly: every read reports failure instead of panicking, and Done reports
// whether the input was consumed exactly.
type Reader struct {
	s  cryptobyte.String
	ok bool
}

// NewReader returns a Reader over p.
func NewReader(p []byte) *Reader { return &Reader{s: cryptobyte.String(p), ok: true} }

// OK reports whether every read so far succeeded.
func (r *Reader) OK() bool { return r.ok }

// Fail marks the reader as failed (for semantic checks made by the caller).
func (r *Reader) Fail() { r.ok = false }

// Len returns the number of unread bytes.
func (r *Reader) Len() int { return len(r.s) }

// U8 reads one byte.
func (r *Reader) U8() uint8 {
	var v uint8
	if r.ok && !r.s.ReadUint8(&v) {
		r.ok = false
	}
	return v
}

// U16 reads a big-endian uint16.
func (r *Reader) U16() uint16 {
	var v uint16
	if r.ok && !r.s.ReadUint16(&v) {
		r.ok = false
	}
	return v
}

// U32 reads a big-endian uint32.
func (r *Reader) U32() uint32 {
	var v uint32
	if r.ok && !r.s.ReadUint32(&v) {
		r.ok = false
	}
	return v
}

// U64 reads a big-endian uint64.
func (r *Reader) U64() uint64 {
	var v uint64
	if r.ok && !r.s.ReadUint64(&v) {
		r.ok = false
	}
	return v
}

// Raw reads exactly n bytes into a fresh slice.
func (r *Reader) Raw(n int) []byte {
	var v []byte
	if r.ok && !r.s.ReadBytes(&v, n) {
		r.ok = false
		return nil
	}
	return clone(v)
}

// Fixed reads exactly len(dst) bytes into dst.
func (r *Reader) Fixed(dst []byte) {
	var v []byte
	if r.ok && !r.s.ReadBytes(&v, len(dst)) {
		r.ok = false
		return
	}
	copy(dst, v)
}

// Var reads a uint32-length-prefixed field of at most max bytes into a fresh slice.
func (r *Reader) Var(max int) []byte {
	n := r.U32()
	if !r.ok || uint64(n) > uint64(max) {
		r.ok = false
		return nil
	}
	return r.Raw(int(n))
}

// Done reports whether every read succeeded and the input was consumed exactly.
func (r *Reader) Done() bool { return r.ok && len(r.s) == 0 }

// Hash returns SHA-256 over the label and each part, each preceded by its length as a big-endian uint32.
func Hash(label string, parts ...[]byte) [32]byte {
	h := sha256.New()
	var n [4]byte
	put := func(p []byte) {
		l := len(p)
		n[0], n[1], n[2], n[3] = byte(l>>24), byte(l>>16), byte(l>>8), byte(l)
		h.Write(n[:])
		h.Write(p)
	}
	put([]byte(label))
	for _, p := range parts {
		put(p)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// Join returns the label and each part, each preceded by its length as a big-endian uint32 (used for HPKE
// info strings and AEAD associated data).
func Join(label string, parts ...[]byte) []byte {
	n := 4 + len(label)
	for _, p := range parts {
		n += 4 + len(p)
	}
	b := NewBuilder(n)
	b.Var([]byte(label))
	for _, p := range parts {
		b.Var(p)
	}
	out, err := b.Bytes()
	if err != nil {
		// Only reachable with a part longer than 4 GiB, which no caller builds.
		panic("frame: join overflow")
	}
	return out
}

// Zero overwrites p with zeros.
func Zero(p []byte) {
	for i := range p {
		p[i] = 0
	}
}

func clone(p []byte) []byte {
	if p == nil {
		return []byte{}
	}
	out := make([]byte, len(p))
	copy(out, p)
	return out
}
