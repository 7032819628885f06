package kdfchain

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"testing"
)

// TestStepIsHKDFExpand checks the hand-rolled expansion against crypto/hkdf for many chain positions.
func TestStepIsHKDFExpand(t *testing.T) {
	ck := [KeySize]byte{1, 2, 3}
	for n := uint64(0); n < 200; n++ {
		info := binary.BigEndian.AppendUint64([]byte(LabelChainStep), n)
		want, err := hkdf.Expand(sha256.New, ck[:], string(info), 2*KeySize+NonceSize)
		if err != nil {
			t.Fatal(err)
		}
		next, key, nonce, err := Step(&ck, n)
		if err != nil {
			t.Fatal(err)
		}
		got := append(append(next[:], key[:]...), nonce[:]...)
		if !bytes.Equal(got, want) {
			t.Fatalf("step %d differs from HKDF-Expand", n)
		}
		ck = next
	}
}
