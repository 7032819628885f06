package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

// fields splits one JSON object into its members, strictly: exactly one object, no trailing data, keys matched
// exactly (encoding/json would otherwise match "ID" to "id"), no duplicate keys, and only allowed keys.
func fields(data []byte, allowed ...string) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("frame is not a JSON object")
	}
	m := make(map[string]json.RawMessage, len(allowed))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("bad key: %w", err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, errors.New("bad key")
		}
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
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("field %q: %w", key, err)
		}
		m[key] = v
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, fmt.Errorf("unterminated object: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after frame")
	}
	return m, nil
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

// rawFrame is the JSON shape of every frame, for encoding.
type rawFrame struct {
	V     int             `json:"v"`
	ID    uint64          `json:"id,omitempty"`
	Op    string          `json:"op,omitempty"`
	Push  string          `json:"push,omitempty"`
	Body  json.RawMessage `json:"body,omitempty"`
	Error *Error          `json:"error,omitempty"`
}

// EncodeRequest encodes a request frame. body may be nil (no body), a json.RawMessage or any value that encodes
// to a JSON object.
func EncodeRequest(id uint64, op string, body any) ([]byte, error) {
	b, err := marshalBody(body)
	if err != nil {
		return nil, fmt.Errorf("wire: encode request %s: %w", op, err)
	}
	return json.Marshal(rawFrame{V: Version, ID: id, Op: op, Body: b})
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
	return json.Marshal(rawFrame{V: Version, ID: id, Body: b})
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
	return json.Marshal(rawFrame{V: Version, Push: name, Body: b})
}

func marshalBody(body any) (json.RawMessage, error) {
	switch b := body.(type) {
	case nil:
		return nil, nil
	case json.RawMessage:
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
