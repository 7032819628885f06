package mailbox

import (
	"bytes"
	"testing"
)

func FuzzDecodeFrame(f *testing.F) {
	e := &Envelope{MessageID: msgID(1), Stamp: 1, Ciphertext: []byte("x")}
	f.Add(cb.marshal(&frame{Type: tPut, Env: toRec(e)}))
	f.Add(cb.marshal(&frame{Type: tAck, Seq: 3, IDs: [][]byte{e.MessageID[:]}}))
	f.Add(cb.marshal(&frame{Type: tError, Status: StatusReplay, Message: "replay"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := decodeFrame(b)
		if err != nil {
			return
		}
		if !bytes.Equal(cb.marshal(fr), b) {
			t.Fatal("decoded frame does not re-encode to its input")
		}
		if fr.Env != nil {
			_, _ = fromRec(fr.Env)
		}
		if fr.Tomb != nil {
			_, _ = fromTombRec(fr.Tomb)
		}
	})
}

func TestDecodeFrameRefusesTrailingBytesAndUnknownTypes(t *testing.T) {
	good := cb.marshal(&frame{Type: tEnd})
	if _, err := decodeFrame(good); err != nil {
		t.Fatal(err)
	}
	if _, err := decodeFrame(append(bytes.Clone(good), 0)); err == nil {
		t.Fatal("trailing byte accepted")
	}
	if _, err := decodeFrame(cb.marshal(&frame{Type: 99})); err == nil {
		t.Fatal("unknown frame type accepted")
	}
}
