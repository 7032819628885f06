package keyregistry

import (
	"bytes"
	"errors"
	"testing"
)

func TestRecordRoundTripsAndDecodesStrictly(t *testing.T) {
	c := newCodec()
	r := &Record{Chain: []byte("chain"), Receipts: []Receipt{{Seq: 0, Body: []byte("r0")}, {Seq: 2, Body: []byte("r2")}}}
	b, err := c.marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Chain, r.Chain) || len(got.Receipts) != 2 || got.receiptFor(2) == nil || got.receiptFor(1) != nil {
		t.Fatalf("round trip: %+v", got)
	}
	bad := map[string][]byte{
		"trailing byte": append(append([]byte(nil), b...), 0),
		"truncated":     b[:len(b)-1],
		"empty":         nil,
	}
	for name, in := range bad {
		if _, err := c.unmarshal(in); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
	if _, err := c.unmarshal(make([]byte, MaxRecordSize+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized: got %v", err)
	}
	unsorted := &Record{Chain: []byte("c"), Receipts: []Receipt{{Seq: 2, Body: []byte("x")}, {Seq: 1, Body: []byte("y")}}}
	if _, err := c.marshal(unsorted); !errors.Is(err, ErrMalformed) {
		t.Errorf("unsorted receipts: got %v", err)
	}
}
