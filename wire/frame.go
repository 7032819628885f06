package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Version is the frame protocol version this package speaks.
const Version = 1

// MaxID is the largest request id: ids must be exactly representable as a JavaScript number.
const MaxID = 1<<53 - 1

// Request is a frame from client to gateway: {"v":1,"id":N,"op":"name","body":{...}}.
type Request struct {
	ID   uint64
	Op   string
	Body json.RawMessage // a JSON object; "{}" when the frame had no body
}

// Response is a frame from gateway to client answering the request with the same ID: exactly one of Body and
// Error is set.
type Response struct {
	ID    uint64
	Body  json.RawMessage
	Error *Error
}

// Push is an unsolicited frame from gateway to client: {"v":1,"push":"name","body":{...}}.
type Push struct {
	Name string
	Body json.RawMessage
}

// maxOpLen caps operation and push names.
const maxOpLen = 64

// emptyBody is the body of a frame that carried none.
var emptyBody = json.RawMessage("{}")

// fields splits one JSON object into its members, strictly: exactly one valid JSON object and nothing after
// it, keys matched exactly (encoding/json would otherwise match "ID" to "id"), no duplicate keys, and only
// allowed keys. It validates once with json.Valid and then walks the top level by hand, which is several times
// faster than encoding/json's token API on frames that carry kilobytes of base64.
func fields(data []byte, allowed ...string) (map[string]json.RawMessage, error) {
	if !json.Valid(data) {
		return nil, errors.New("not valid JSON")
	}
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return nil, errors.New("frame is not a JSON object")
	}
	m := make(map[string]json.RawMessage, len(allowed))
	i = skipSpace(data, i+1)
	if data[i] == '}' {
		return m, nil
	}
	for {
		// A key: json.Valid guarantees a string here. Keys with escapes are never among the allowed ones.
		end := i + 1
		for data[end] != '"' {
			if data[end] == '\\' {
				return nil, errors.New("escaped field name")
			}
			end++
		}
		key := string(data[i+1 : end])
		known := false
		for _, a := range allowed {
			if key == a {
				known = true
				break
			}
		}
		if !known {
			return nil, fmt.Errorf("unknown field %q", key)
		}
		if _, dup := m[key]; dup {
			return nil, fmt.Errorf("duplicate field %q", key)
		}
		i = skipSpace(data, end+1) + 1 // past ':'
		i = skipSpace(data, i)
		vend := skipValue(data, i)
		m[key] = json.RawMessage(data[i:vend])
		i = skipSpace(data, vend)
		if data[i] == '}' {
			return m, nil
		}
		i = skipSpace(data, i+1) // past ','
	}
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the end of the JSON value starting at i, in input json.Valid accepted.
func skipValue(data []byte, i int) int {
	depth := 0
	for ; i < len(data); i++ {
		switch c := data[i]; c {
		case '"':
			for i++; data[i] != '"'; i++ {
				if data[i] == '\\' {
					i++
				}
			}
			if depth == 0 {
				return i + 1
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i
			}
			depth--
			if depth == 0 {
				return i + 1
			}
		case ',':
			if depth == 0 {
				return i
			}
		case ' ', '\t', '\n', '\r':
			if depth == 0 {
				return i
			}
		}
	}
	return i
}

func decodeVersion(m map[string]json.RawMessage) error {
	raw, ok := m["v"]
	if !ok {
		return Errorf(CodeMalformed, "missing v")
	}
	var v int
	if err := json.Unmarshal(raw, &v); err != nil {
		return Errorf(CodeMalformed, "bad v: %v", err)
	}
	if v != Version {
		return Errorf(CodeUnsupportedVersion, "version %d not supported (want %d)", v, Version)
	}
	return nil
}

func decodeID(m map[string]json.RawMessage) (uint64, error) {
	raw, ok := m["id"]
	if !ok {
		return 0, Errorf(CodeMalformed, "missing id")
	}
	var id uint64
	if err := json.Unmarshal(raw, &id); err != nil || id == 0 || id > MaxID {
		return 0, Errorf(CodeMalformed, "id must be an integer in 1..2^53-1")
	}
	return id, nil
}

func decodeName(m map[string]json.RawMessage, key string) (string, error) {
	raw, ok := m[key]
	if !ok {
		return "", Errorf(CodeMalformed, "missing %s", key)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil || s == "" || len(s) > maxOpLen {
		return "", Errorf(CodeMalformed, "%s must be a non-empty string of at most %d bytes", key, maxOpLen)
	}
	return s, nil
}

func decodeBody(m map[string]json.RawMessage) (json.RawMessage, error) {
	raw, ok := m["body"]
	if !ok {
		return emptyBody, nil
	}
	if len(raw) == 0 || raw[0] != '{' {
		return nil, Errorf(CodeMalformed, "body must be a JSON object")
	}
	return raw, nil
}

// DecodeRequest parses one client frame strictly. Unknown or duplicate top-level fields, a missing or zero id, a
// missing op, a body that is not an object and trailing data are CodeMalformed; a version other than Version is
// CodeUnsupportedVersion. The returned error is always an *Error. When the id could be read it is returned even
// with an error, so the gateway can answer that request.
func DecodeRequest(data []byte) (Request, error) {
	m, err := fields(data, "v", "id", "op", "body")
	if err != nil {
		return Request{}, Errorf(CodeMalformed, "%v", err)
	}
	id, idErr := decodeID(m)
	if err := decodeVersion(m); err != nil {
		return Request{ID: id}, err
	}
	if idErr != nil {
		return Request{}, idErr
	}
	op, err := decodeName(m, "op")
	if err != nil {
		return Request{ID: id}, err
	}
	body, err := decodeBody(m)
	if err != nil {
		return Request{ID: id}, err
	}
	return Request{ID: id, Op: op, Body: body}, nil
}

// ServerFrame is a decoded gateway frame: a Response (Push is nil) or a Push.
type ServerFrame struct {
	Response *Response
	Push     *Push
}

// DecodeServerFrame parses one gateway frame strictly, for clients.
func DecodeServerFrame(data []byte) (ServerFrame, error) {
	m, err := fields(data, "v", "id", "body", "error", "push")
	if err != nil {
		return ServerFrame{}, Errorf(CodeMalformed, "%v", err)
	}
	if err := decodeVersion(m); err != nil {
		return ServerFrame{}, err
	}
	if _, isPush := m["push"]; isPush {
		if _, ok := m["id"]; ok {
			return ServerFrame{}, Errorf(CodeMalformed, "push with id")
		}
		if _, ok := m["error"]; ok {
			return ServerFrame{}, Errorf(CodeMalformed, "push with error")
		}
		name, err := decodeName(m, "push")
		if err != nil {
			return ServerFrame{}, err
		}
		body, err := decodeBody(m)
		if err != nil {
			return ServerFrame{}, err
		}
		return ServerFrame{Push: &Push{Name: name, Body: body}}, nil
	}
	rawErr, hasErr := m["error"]
	id, err := decodeID(m)
	if err != nil && !(hasErr && string(m["id"]) == "0") { // id 0 answers a frame whose id was unreadable
		return ServerFrame{}, err
	}
	if !hasErr {
		body, err := decodeBody(m)
		if err != nil {
			return ServerFrame{}, err
		}
		return ServerFrame{Response: &Response{ID: id, Body: body}}, nil
	}
	if _, ok := m["body"]; ok {
		return ServerFrame{}, Errorf(CodeMalformed, "response with both body and error")
	}
	var e Error
	if err := StrictUnmarshal(rawErr, &e); err != nil || e.Code <= 0 || e.Reason == "" {
		return ServerFrame{}, Errorf(CodeMalformed, "bad error object")
	}
	return ServerFrame{Response: &Response{ID: id, Error: &e}}, nil
}

// The encoders write the frame's fixed fields by hand around the body's own encoding, so a body is marshalled
// once and never re-compacted.

// EncodeRequest encodes a request frame. body may be nil (no body), a json.RawMessage or any value that encodes
// to a JSON object.
func EncodeRequest(id uint64, op string, body any) ([]byte, error) {
	b, err := marshalBody(body)
	if err != nil {
		return nil, fmt.Errorf("wire: encode request %s: %w", op, err)
	}
	name, err := json.Marshal(op)
	if err != nil {
		return nil, fmt.Errorf("wire: encode request %s: %w", op, err)
	}
	out := make([]byte, 0, 48+len(name)+len(b))
	out = append(out, `{"v":1,"id":`...)
	out = strconv.AppendUint(out, id, 10)
	out = append(out, `,"op":`...)
	out = append(out, name...)
	if b != nil {
		out = append(out, `,"body":`...)
		out = append(out, b...)
	}
	return append(out, '}'), nil
}

// EncodeResponse encodes a successful response frame.
func EncodeResponse(id uint64, body any) ([]byte, error) {
	b, err := marshalBody(body)
	if err != nil {
		return nil, fmt.Errorf("wire: encode response %d: %w", id, err)
	}
	if b == nil {
		b = emptyBody
	}
	out := make([]byte, 0, 40+len(b))
	out = append(out, `{"v":1,"id":`...)
	out = strconv.AppendUint(out, id, 10)
	out = append(out, `,"body":`...)
	out = append(out, b...)
	return append(out, '}'), nil
}

// EncodeError encodes an error response frame. id 0 answers a frame whose id could not be read.
func EncodeError(id uint64, e *Error) []byte {
	if e.Reason == "" {
		e = &Error{Code: e.Code, Reason: e.Code.Reason(), Message: e.Message}
	}
	b, err := json.Marshal(struct {
		V     int    `json:"v"`
		ID    uint64 `json:"id"`
		Error *Error `json:"error"`
	}{Version, id, e})
	if err != nil { // an *Error of ints and strings always encodes; keep a valid frame regardless
		return []byte(`{"v":1,"id":0,"error":{"code":13,"reason":"internal"}}`)
	}
	return b
}

// EncodePush encodes a push frame.
func EncodePush(name string, body any) ([]byte, error) {
	b, err := marshalBody(body)
	if err != nil {
		return nil, fmt.Errorf("wire: encode push %s: %w", name, err)
	}
	if b == nil {
		b = emptyBody
	}
	n, err := json.Marshal(name)
	if err != nil {
		return nil, fmt.Errorf("wire: encode push %s: %w", name, err)
	}
	out := make([]byte, 0, 32+len(n)+len(b))
	out = append(out, `{"v":1,"push":`...)
	out = append(out, n...)
	out = append(out, `,"body":`...)
	out = append(out, b...)
	return append(out, '}'), nil
}

func marshalBody(body any) (json.RawMessage, error) {
	switch b := body.(type) {
	case nil:
		return nil, nil
	case json.RawMessage:
		if len(b) == 0 || b[0] != '{' || !json.Valid(b) {
			return nil, errors.New("body is not a JSON object")
		}
		return b, nil
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	if len(b) == 0 || b[0] != '{' {
		return nil, errors.New("body is not a JSON object")
	}
	return b, nil
}

// StrictUnmarshal decodes one JSON value into v, rejecting unknown fields and trailing data. Operation handlers
// use it for request bodies.
func StrictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data")
	}
	return nil
}
