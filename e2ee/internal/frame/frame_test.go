package frame

import (
	"bytes"
	"testing"
)

func TestReaderIsStrict(t *testing.T) {
	b := NewBuilder(0)
	b.U8(1)
	b.U16(2)
	b.U32(3)
	b.U64(4)
	b.Raw([]byte{5, 5})
	b.Var([]byte("six"))
	enc, err := b.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{1, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 4, 5, 5, 0, 0, 0, 3, 's', 'i', 'x'}
	if !bytes.Equal(enc, want) {
		t.Fatalf("encoding %x, want %x", enc, want)
	}
	read := func(p []byte, max int) *Reader {
		r := NewReader(p)
		r.U8()
		r.U16()
		r.U32()
		r.U64()
		r.Raw(2)
		r.Var(max)
		return r
	}
	if r := read(enc, 3); !r.Done() {
		t.Fatal("exact input refused")
	}
	if r := read(append(bytes.Clone(enc), 0), 3); r.Done() {
		t.Fatal("trailing byte accepted")
	}
	for n := 0; n < len(enc); n++ {
		if r := read(enc[:n], 3); r.Done() || (n < len(enc) && r.OK()) {
			t.Fatalf("truncation at %d accepted", n)
		}
	}
	if r := read(enc, 2); r.OK() {
		t.Fatal("field over its cap accepted")
	}
}

func TestHashAndJoinAreLengthPrefixed(t *testing.T) {
	// Moving a byte between fields changes the framing, so ("ab","c") and ("a","bc") never collide.
	if Hash("l", []byte("ab"), []byte("c")) == Hash("l", []byte("a"), []byte("bc")) {
		t.Fatal("hash framing is ambiguous")
	}
	if bytes.Equal(Join("l", []byte("ab"), []byte("c")), Join("l", []byte("a"), []byte("bc"))) {
		t.Fatal("join framing is ambiguous")
	}
	if got := Join("x", []byte{7}); !bytes.Equal(got, []byte{0, 0, 0, 1, 'x', 0, 0, 0, 1, 7}) {
		t.Fatalf("join %x", got)
	}
}
