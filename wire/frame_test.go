package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

func TestDecodeRequestAcceptsValidFrames(t *testing.T) {
	for _, tc := range []struct {
		in   string
		id   uint64
		op   string
		body string
	}{
		{`{"v":1,"id":1,"op":"send","body":{"a":1}}`, 1, "send", `{"a":1}`},
		{`{"op":"ping","id":9007199254740991,"v":1}`, MaxID, "ping", `{}`},
		{` {"v":1,"id":7,"op":"auth","body":{}} `, 7, "auth", `{}`},
	} {
		r, err := DecodeRequest([]byte(tc.in))
		if err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		if r.ID != tc.id || r.Op != tc.op || string(r.Body) != tc.body {
			t.Errorf("%s: got %+v", tc.in, r)
		}
	}
}

func TestDecodeRequestRejectsMalformedFrames(t *testing.T) {
	for _, tc := range []struct {
		in   string
		code Code
	}{
		{``, CodeMalformed},
		{`not json`, CodeMalformed},
		{`[1,2]`, CodeMalformed},
		{`{"v":1,"id":1,"op":"x"} {}`, CodeMalformed},             // trailing data
		{`{"v":1,"id":1,"op":"x"}x`, CodeMalformed},               // trailing garbage
		{`{"v":1,"id":1,"op":"x","extra":1}`, CodeMalformed},      // unknown field
		{`{"v":1,"ID":1,"op":"x"}`, CodeMalformed},                // case-folded key
		{`{"v":1,"id":1,"id":2,"op":"x"}`, CodeMalformed},         // duplicate key
		{`{"v":1,"op":"x"}`, CodeMalformed},                       // missing id
		{`{"v":1,"id":0,"op":"x"}`, CodeMalformed},                // zero id
		{`{"v":1,"id":-1,"op":"x"}`, CodeMalformed},               // negative id
		{`{"v":1,"id":1.5,"op":"x"}`, CodeMalformed},              // fractional id
		{`{"v":1,"id":9007199254740992,"op":"x"}`, CodeMalformed}, // beyond 2^53-1
		{`{"v":1,"id":1}`, CodeMalformed},                         // missing op
		{`{"v":1,"id":1,"op":""}`, CodeMalformed},                 // empty op
		{`{"v":1,"id":1,"op":3}`, CodeMalformed},                  // op not a string
		{`{"v":1,"id":1,"op":"x","body":[]}`, CodeMalformed},      // body not an object
		{`{"v":1,"id":1,"op":"x","body":null}`, CodeMalformed},    // null body
		{`{"id":1,"op":"x"}`, CodeMalformed},                      // missing version
		{`{"v":2,"id":1,"op":"x"}`, CodeUnsupportedVersion},       // wrong version
		{`{"v":"1","id":1,"op":"x"}`, CodeMalformed},              // version not a number
		{`{"v":1,"id":1,"op":"x","body":{"a":}}`, CodeMalformed},  // broken body
	} {
		_, err := DecodeRequest([]byte(tc.in))
		var we *Error
		if !errors.As(err, &we) || we.Code != tc.code {
			t.Errorf("%q: got %v, want code %d", tc.in, err, tc.code)
		}
	}
}

func TestDecodeRequestKeepsIDOfBadFrame(t *testing.T) {
	r, err := DecodeRequest([]byte(`{"v":2,"id":42,"op":"x"}`))
	if !errors.Is(err, ErrUnsupportedVersion) || r.ID != 42 {
		t.Fatalf("got %v id %d", err, r.ID)
	}
}

func TestServerFramesRoundTrip(t *testing.T) {
	resp, err := EncodeResponse(5, SendResponse{Results: []RecipientResult{{DeviceID: []byte{1}, Status: StatusDelivered}}})
	if err != nil {
		t.Fatal(err)
	}
	f, err := DecodeServerFrame(resp)
	if err != nil || f.Response == nil || f.Response.ID != 5 || f.Response.Error != nil {
		t.Fatalf("response: %+v %v", f, err)
	}
	var sr SendResponse
	if err := StrictUnmarshal(f.Response.Body, &sr); err != nil || sr.Results[0].Status != StatusDelivered {
		t.Fatalf("body: %+v %v", sr, err)
	}

	f, err = DecodeServerFrame(EncodeError(6, Errorf(CodeRateLimited, "slow down")))
	if err != nil || f.Response == nil || !errors.Is(f.Response.Error, ErrRateLimited) || f.Response.Error.Reason != "rate_limited" {
		t.Fatalf("error: %+v %v", f, err)
	}

	f, err = DecodeServerFrame(EncodeError(0, Errorf(CodeMalformed, "bad")))
	if err != nil || f.Response == nil || f.Response.ID != 0 || !errors.Is(f.Response.Error, ErrMalformed) {
		t.Fatalf("id-0 error: %+v %v", f, err)
	}
	if _, err := DecodeServerFrame([]byte(`{"v":1,"id":0,"body":{}}`)); err == nil {
		t.Fatal("id-0 response with a body accepted")
	}

	p, err := EncodePush(PushEnvelope, EnvelopePush{MessageID: bytes.Repeat([]byte{7}, 16)})
	if err != nil {
		t.Fatal(err)
	}
	f, err = DecodeServerFrame(p)
	if err != nil || f.Push == nil || f.Push.Name != PushEnvelope {
		t.Fatalf("push: %+v %v", f, err)
	}
}

func TestEncodeRequestRoundTrips(t *testing.T) {
	b, err := EncodeRequest(3, OpAck, Ack{MessageID: []byte{1, 2}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := DecodeRequest(b)
	if err != nil || r.ID != 3 || r.Op != OpAck {
		t.Fatalf("%+v %v", r, err)
	}
	var a Ack
	if err := StrictUnmarshal(r.Body, &a); err != nil || !bytes.Equal(a.MessageID, []byte{1, 2}) {
		t.Fatalf("%+v %v", a, err)
	}
	if _, err := EncodeRequest(1, "x", []int{1}); err == nil {
		t.Fatal("non-object body encoded")
	}
}

func TestCodesKeepTheirNumbers(t *testing.T) {
	// The wire table is append-only: these numbers are part of the protocol.
	want := map[Code]string{1: "malformed", 2: "unsupported_version", 3: "unknown_op", 4: "unauthenticated",
		5: "auth_failed", 6: "bad_nonce", 7: "rate_limited", 8: "too_large", 9: "bad_request", 10: "not_found",
		11: "revoked", 12: "unavailable", 13: "internal", 14: "already_authenticated", 15: "duplicate_id", 16: "busy"}
	for c, r := range want {
		if c.Reason() != r {
			t.Errorf("code %d: reason %q, want %q", c, c.Reason(), r)
		}
	}
}

func TestSendRequestValidate(t *testing.T) {
	dev := bytes.Repeat([]byte{1}, 32)
	ok := SendRequest{MessageID: make([]byte, 16), Ciphertext: []byte("x"), Recipients: [][]byte{dev}}
	if _, ids, err := ok.Validate(10, 2); err != nil || len(ids) != 1 {
		t.Fatalf("valid: %v", err)
	}
	for name, tc := range map[string]struct {
		r    SendRequest
		code Code
	}{
		"short id":   {SendRequest{MessageID: make([]byte, 15), Ciphertext: []byte("x"), Recipients: [][]byte{dev}}, CodeBadRequest},
		"empty ct":   {SendRequest{MessageID: make([]byte, 16), Recipients: [][]byte{dev}}, CodeBadRequest},
		"big ct":     {SendRequest{MessageID: make([]byte, 16), Ciphertext: make([]byte, 11), Recipients: [][]byte{dev}}, CodeTooLarge},
		"none":       {SendRequest{MessageID: make([]byte, 16), Ciphertext: []byte("x")}, CodeBadRequest},
		"too many":   {SendRequest{MessageID: make([]byte, 16), Ciphertext: []byte("x"), Recipients: [][]byte{dev, dev, dev}}, CodeTooLarge},
		"duplicate":  {SendRequest{MessageID: make([]byte, 16), Ciphertext: []byte("x"), Recipients: [][]byte{dev, dev}}, CodeBadRequest},
		"bad device": {SendRequest{MessageID: make([]byte, 16), Ciphertext: []byte("x"), Recipients: [][]byte{{1}}}, CodeBadRequest},
	} {
		_, _, err := tc.r.Validate(10, 2)
		var we *Error
		if !errors.As(err, &we) || we.Code != tc.code {
			t.Errorf("%s: got %v want %d", name, err, tc.code)
		}
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"v":1,"id":1,"op":"send","body":{"message_id":"AAAAAAAAAAAAAAAAAAAAAA=="}}`))
	f.Add([]byte(`{"v":1,"id":2,"op":"auth"}`))
	f.Add([]byte(`{"v":2,"id":1,"op":"x"}`))
	f.Add([]byte(`{"v":1,"id":1,"id":1,"op":"x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeRequest(data)
		if err != nil {
			var we *Error
			if !errors.As(err, &we) {
				t.Fatalf("error is not *Error: %v", err)
			}
			return
		}
		if r.ID == 0 || r.ID > MaxID || r.Op == "" || len(r.Body) == 0 || r.Body[0] != '{' || !json.Valid(r.Body) {
			t.Fatalf("accepted bad request %+v from %q", r, data)
		}
		// A decoded request re-encodes to a frame that decodes to the same request.
		b, err := EncodeRequest(r.ID, r.Op, r.Body)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		r2, err := DecodeRequest(b)
		if err != nil || r2.ID != r.ID || r2.Op != r.Op {
			t.Fatalf("round trip: %+v %v", r2, err)
		}
	})
}

func FuzzDecodeServerFrame(f *testing.F) {
	f.Add([]byte(`{"v":1,"id":1,"body":{}}`))
	f.Add([]byte(`{"v":1,"id":1,"error":{"code":7,"reason":"rate_limited","message":"x"}}`))
	f.Add([]byte(`{"v":1,"push":"envelope","body":{"ciphertext":"AA=="}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := DecodeServerFrame(data)
		if err != nil {
			return
		}
		if (fr.Response == nil) == (fr.Push == nil) {
			t.Fatalf("frame is neither or both: %+v", fr)
		}
	})
}
