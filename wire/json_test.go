package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCheckJSONAgreesWithEncodingJSON(t *testing.T) {
	valid := []string{
		`{}`, `[]`, `0`, `-0`, `1.5e+3`, `-12.25E-2`, `"x"`, `"\u00e9\"\\\/\b\f\n\r\t"`, `true`, `false`, `null`,
		` { "a" : [ 1 , {"b":null} ] } `, `"é"`, `[[[]]]`,
	}
	for _, v := range valid {
		if err := checkJSON([]byte(v)); err != nil {
			t.Errorf("%s: %v", v, err)
		}
		if !json.Valid([]byte(v)) {
			t.Fatalf("test case %s is not valid JSON", v)
		}
	}
	invalid := []string{
		``, ` `, `{`, `}`, `{"a"}`, `{"a":}`, `{"a":1,}`, `[1,]`, `[1 2]`, `01`, `1.`, `.5`, `1e`, `-`, `+1`,
		`"abc`, `"\x"`, `"\u12"`, "\"a\x01\"", `tru`, `nul`, `{a:1}`, `{"a":1}x`, `{"a":1}{}`, `'a'`, `NaN`,
	}
	for _, v := range invalid {
		if err := checkJSON([]byte(v)); err == nil {
			t.Errorf("%q accepted", v)
		}
		if json.Valid([]byte(v)) {
			t.Fatalf("test case %q is valid JSON", v)
		}
	}
}

func TestCheckJSONIsStricterThanEncodingJSON(t *testing.T) {
	for name, v := range map[string]string{
		"invalid UTF-8": "\"\xff\"",
		"too deep":      strings.Repeat("[", MaxJSONDepth+1) + strings.Repeat("]", MaxJSONDepth+1),
	} {
		if !json.Valid([]byte(v)) {
			t.Fatalf("%s: encoding/json refuses it too", name)
		}
		if err := checkJSON([]byte(v)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	deep := strings.Repeat("[", MaxJSONDepth) + strings.Repeat("]", MaxJSONDepth)
	if err := checkJSON([]byte(deep)); err != nil {
		t.Errorf("nesting of exactly %d: %v", MaxJSONDepth, err)
	}
}

func TestBodyDecodersRefuseWhatEncodingJSONWouldBend(t *testing.T) {
	for name, body := range map[string]string{
		"name in other case": `{"MESSAGE_ID":"AAAAAAAAAAAAAAAAAAAAAA==","ciphertext":"eA==","recipients":[]}`,
		"duplicate name":     `{"ciphertext":"eA==","ciphertext":"eQ=="}`,
		"unknown name":       `{"ciphertext":"eA==","extra":1}`,
		"trailing data":      `{"ciphertext":"eA=="} {}`,
		"bad base64":         `{"ciphertext":"e"}`,
		"number for bytes":   `{"ciphertext":12}`,
		"object for list":    `{"recipients":{}}`,
		"escaped name":       `{"cipher\u0074ext":"eA=="}`,
		"not an object":      `["ciphertext"]`,
	} {
		var r SendRequest
		if err := StrictUnmarshal([]byte(body), &r); err == nil {
			t.Errorf("%s: accepted as %+v", name, r)
		}
	}
}

func TestBodyEncodersWriteWhatEncodingJSONWrites(t *testing.T) {
	values := []any{
		SendRequest{MessageID: make([]byte, 16), Ciphertext: bytes.Repeat([]byte{0xfb}, 1000), Recipients: [][]byte{make([]byte, 32), {1}}},
		SendRequest{},
		SendRequest{Ciphertext: []byte{}, Recipients: [][]byte{}},
		EnvelopePush{MessageID: []byte{1}, SenderDevice: []byte{2, 3}, Ciphertext: []byte("hello")},
		EnvelopePush{},
		Ack{MessageID: []byte{1}, SenderDevice: []byte{2}},
		Ack{SenderDevice: []byte{2}},
		Ack{Acks: []AckEntry{{MessageID: []byte{1}, SenderDevice: []byte{2}}, {}}},
		Ack{},
		SendResponse{},
		SendResponse{Results: []RecipientResult{}},
		SendResponse{Results: []RecipientResult{
			{DeviceID: []byte{1}, Status: StatusDelivered},
			{DeviceID: []byte{2}, Status: StatusFailed, Code: CodeUnavailable, Reason: FailAckTimeout},
			{DeviceID: []byte{3}, Status: StatusStored, Receipts: [][]byte{{9}, nil}},
			{Status: "a \"quoted\" <status> & é\n"},
		}},
	}
	for _, v := range values {
		want, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		got := v.(fastBody).appendJSON(nil)
		if !bytes.Equal(got, want) {
			t.Errorf("%T:\n got %s\nwant %s", v, got, want)
		}
		// And the decoder reads back what encoding/json reads.
		fresh := reflect.New(reflect.TypeOf(v))
		if err := fresh.Interface().(fastDecoder).decodeJSON(want); err != nil {
			t.Errorf("%T: decode %s: %v", v, want, err)
			continue
		}
		ref := reflect.New(reflect.TypeOf(v))
		if err := json.Unmarshal(want, ref.Interface()); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(fresh.Elem().Interface(), ref.Elem().Interface()) {
			t.Errorf("%T: decoded %+v, encoding/json %+v", v, fresh.Elem().Interface(), ref.Elem().Interface())
		}
	}
}

func TestEncodersRefuseNilPointerBodies(t *testing.T) {
	var r *SendResponse
	if _, err := EncodeResponse(1, r); err == nil {
		t.Fatal("nil body encoded")
	}
}

// FuzzBodyCodecsAgreeWithEncodingJSON: whatever the wire's own decoders accept, encoding/json accepts too and
// reads the same value from, and the wire's encoders write that value exactly as encoding/json does.
func FuzzBodyCodecsAgreeWithEncodingJSON(f *testing.F) {
	f.Add(`{"message_id":"AAAAAAAAAAAAAAAAAAAAAA==","ciphertext":"aGk=","recipients":["AQ==",null]}`)
	f.Add(`{"message_id":null,"sender_device":"AQI=","ciphertext":"aGVsbG8="}`)
	f.Add(`{"acks":[{"message_id":"AQ==","sender_device":"Ag=="},null]}`)
	f.Add(`{"results":[{"device_id":"AQ==","status":"failed","code":12,"reason":"gone"},{"status":"stored","receipts":["CQ=="]}]}`)
	f.Add(`{"results":[{"status":"\u00e9\n","code":-0}]}`)
	f.Add(`{"ciphertext":"a\/8="}`)
	f.Fuzz(func(t *testing.T, data string) {
		for _, typ := range []reflect.Type{
			reflect.TypeFor[SendRequest](), reflect.TypeFor[EnvelopePush](), reflect.TypeFor[Ack](), reflect.TypeFor[SendResponse](),
		} {
			fast := reflect.New(typ)
			if err := StrictUnmarshal([]byte(data), fast.Interface()); err != nil {
				continue
			}
			ref := reflect.New(typ)
			if err := json.Unmarshal([]byte(data), ref.Interface()); err != nil {
				t.Fatalf("%v accepted %q, encoding/json refuses it: %v", typ, data, err)
			}
			if !reflect.DeepEqual(fast.Elem().Interface(), ref.Elem().Interface()) {
				t.Fatalf("%v read %q as %+v, encoding/json as %+v", typ, data, fast.Elem().Interface(), ref.Elem().Interface())
			}
			want, err := json.Marshal(ref.Elem().Interface())
			if err != nil {
				t.Fatal(err)
			}
			if got := fast.Elem().Interface().(fastBody).appendJSON(nil); !bytes.Equal(got, want) {
				t.Fatalf("%v encodes %+v as %s, encoding/json as %s", typ, fast.Elem().Interface(), got, want)
			}
		}
	})
}

// FuzzCheckJSON: the wire's validator accepts only what encoding/json accepts, and refuses valid JSON only for
// invalid UTF-8 or nesting deeper than MaxJSONDepth.
func FuzzCheckJSON(f *testing.F) {
	for _, s := range []string{`{"a":[1,2.5e-3,"x\u0041",true,null]}`, `[[[]]]`, `"\xff"`, `01`, ` {} `} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data string) {
		ours := checkJSON([]byte(data)) == nil
		std := json.Valid([]byte(data))
		if ours && !std {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		if std && !ours && utf8.ValidString(data) && nesting(data) <= MaxJSONDepth {
			t.Fatalf("refused valid JSON %q: %v", data, checkJSON([]byte(data)))
		}
	})
}

// nesting is the deepest nesting of arrays and objects in valid JSON s.
func nesting(s string) int {
	depth, deepest, inString := 0, 0, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case !inString && (c == '[' || c == '{'):
			depth++
			deepest = max(deepest, depth)
		case !inString && (c == ']' || c == '}'):
			depth--
		}
	}
	return deepest
}

func BenchmarkDecodeSendRequest(b *testing.B) {
	body, err := json.Marshal(SendRequest{MessageID: make([]byte, 16), Ciphertext: make([]byte, 1024), Recipients: [][]byte{make([]byte, 32)}})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("wire", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var r SendRequest
			if err := StrictUnmarshal(body, &r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var r SendRequest
			if err := strictReflect(body, &r); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestPlain8AgreesWithTheTable(t *testing.T) {
	var b [8]byte
	for c := range 256 {
		for pos := range 8 {
			for i := range b {
				b[i] = 'A'
			}
			b[pos] = byte(c)
			if got := plain8(binary.LittleEndian.Uint64(b[:])); got != plain[c] {
				t.Fatalf("byte %#x at %d: plain8 %v, table %v", c, pos, got, plain[c])
			}
		}
	}
}
