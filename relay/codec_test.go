package relay

import (
	"bufio"
	"bytes"
	"testing"

	"github.com/iagon/gridchat/wire"
)

func encodeDeliver(t testing.TB, r deliverReq) []byte {
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	if err := writeDeliver(w, r); err != nil {
		t.Fatal(err)
	}
	_ = w.Flush()
	return b.Bytes()[frameHeader:]
}

func encodeResult(t testing.TB, r deliverRes) []byte {
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	if err := writeResult(w, r); err != nil {
		t.Fatal(err)
	}
	_ = w.Flush()
	return b.Bytes()[frameHeader:]
}

func TestDeliverFramesRoundTripAndRejectDamage(t *testing.T) {
	req := deliverReq{id: 7, env: wire.Envelope{Ciphertext: []byte("hello")}}
	req.env.MessageID[0], req.env.Sender[1], req.env.Recipient[2] = 1, 2, 3
	f := encodeDeliver(t, req)
	got, err := parseDeliver(f, 64)
	if err != nil || got.id != 7 || got.env.MessageID != req.env.MessageID || got.env.Sender != req.env.Sender ||
		got.env.Recipient != req.env.Recipient || string(got.env.Ciphertext) != "hello" {
		t.Fatalf("%+v %v", got, err)
	}
	for name, bad := range map[string][]byte{
		"empty ciphertext": f[:deliverFixed],
		"too large":        append(append([]byte(nil), f...), make([]byte, 64)...),
		"wrong kind":       append([]byte{kindResult}, f[1:]...),
		"truncated":        f[:10],
	} {
		if _, err := parseDeliver(bad, 64); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
	for _, out := range []Outcome{{Status: wire.StatusDelivered}, {Status: wire.StatusOffline},
		failed(wire.CodeUnavailable, wire.FailAckTimeout)} {
		r, err := parseResult(encodeResult(t, deliverRes{id: 9, out: out}))
		if err != nil || r.id != 9 || r.out != out {
			t.Fatalf("%+v: %+v %v", out, r, err)
		}
	}
	ok := encodeResult(t, deliverRes{id: 1, out: failed(wire.CodeBusy, wire.FailBusy)})
	for name, bad := range map[string][]byte{
		"bad status":      func() []byte { b := append([]byte(nil), ok...); b[9] = 9; return b }(),
		"reason length":   func() []byte { b := append([]byte(nil), ok...); b[12]++; return b }(),
		"upper reason":    append(append([]byte(nil), ok[:resultFixed]...), []byte("BUSY")[:len(ok)-resultFixed]...),
		"failed, no code": encodeResult(t, deliverRes{id: 1, out: Outcome{Status: wire.StatusFailed, Reason: "x"}}),
	} {
		if _, err := parseResult(bad); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

func FuzzParseDeliver(f *testing.F) {
	req := deliverReq{id: 1, env: wire.Envelope{Ciphertext: []byte("ciphertext")}}
	f.Add(encodeDeliver(f, req))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := parseDeliver(data, 1024)
		if err != nil {
			return
		}
		if len(r.env.Ciphertext) == 0 || len(r.env.Ciphertext) > 1024 || !bytes.Equal(encodeDeliver(t, r), data) {
			t.Fatalf("accepted %x as %+v", data, r)
		}
	})
}

func FuzzParseResult(f *testing.F) {
	f.Add(encodeResult(f, deliverRes{id: 1, out: Outcome{Status: wire.StatusDelivered}}))
	f.Add(encodeResult(f, deliverRes{id: 2, out: failed(wire.CodeUnavailable, wire.FailGone)}))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := parseResult(data)
		if err != nil {
			return
		}
		if !bytes.Equal(encodeResult(t, r), data) {
			t.Fatalf("accepted %x as %+v, which encodes differently", data, r)
		}
	})
}
