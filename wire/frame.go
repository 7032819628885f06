package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
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

// frame holds the raw members of a frame, by index in its list of allowed names; nil when absent.
type frame [5][]byte

// splitFrame splits one frame, a JSON object, into its members strictly (see json.go): one valid JSON object
// and nothing after it, names matched exactly, no name twice, only the allowed names.
func splitFrame(data []byte, names []string) (frame, error) {
	var f frame
	err := members(data, names, func(k int, val []byte) error {
		f[k] = val
		return nil
	})
	return f, err
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

func decodeVersion(raw []byte) error {
	if raw == nil {
		return Errorf(CodeMalformed, "missing v")
	}
	v, err := jsonInt(raw, 64)
	if err != nil || string(raw) == "null" {
		return Errorf(CodeMalformed, "bad v: must be an integer")
	}
	if v != Version {
		return Errorf(CodeUnsupportedVersion, "version %d not supported (want %d)", v, Version)
	}
	return nil
}

func decodeID(raw []byte) (uint64, error) {
	if raw == nil {
		return 0, Errorf(CodeMalformed, "missing id")
	}
	id, err := strconv.ParseUint(string(raw), 10, 64)
	if err != nil || id == 0 || id > MaxID {
		return 0, Errorf(CodeMalformed, "id must be an integer in 1..2^53-1")
	}
	return id, nil
}

func decodeName(raw []byte, key string) (string, error) {
	if raw == nil {
		return "", Errorf(CodeMalformed, "missing %s", key)
	}
	s, err := jsonString(raw)
	if err != nil || s == "" || len(s) > maxOpLen {
		return "", Errorf(CodeMalformed, "%s must be a non-empty string of at most %d bytes", key, maxOpLen)
	}
	return s, nil
}

func decodeBody(raw []byte) (json.RawMessage, error) {
	if raw == nil {
		return emptyBody, nil
	}
	if raw[0] != '{' {
		return nil, Errorf(CodeMalformed, "body must be a JSON object")
	}
	return raw, nil
}

// The members of a request frame, and of a server frame.
var (
	requestNames = []string{"v", "id", "op", "body"}
	serverNames  = []string{"v", "id", "body", "error", "push"}
)

const (
	reqV, reqID, reqOp, reqBody             = 0, 1, 2, 3
	srvV, srvID, srvBody, srvError, srvPush = 0, 1, 2, 3, 4
)

// DecodeRequest parses one client frame strictly. Unknown or duplicate top-level fields, a missing or zero id, a
// missing op, a body that is not an object and trailing data are CodeMalformed; a version other than Version is
// CodeUnsupportedVersion. The returned error is always an *Error. When the id could be read it is returned even
// with an error, so the gateway can answer that request.
func DecodeRequest(data []byte) (Request, error) {
	m, err := splitFrame(data, requestNames)
	if err != nil {
		return Request{}, Errorf(CodeMalformed, "%v", err)
	}
	id, idErr := decodeID(m[reqID])
	if err := decodeVersion(m[reqV]); err != nil {
		return Request{ID: id}, err
	}
	if idErr != nil {
		return Request{}, idErr
	}
	op, err := decodeName(m[reqOp], "op")
	if err != nil {
		return Request{ID: id}, err
	}
	body, err := decodeBody(m[reqBody])
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
	m, err := splitFrame(data, serverNames)
	if err != nil {
		return ServerFrame{}, Errorf(CodeMalformed, "%v", err)
	}
	if err := decodeVersion(m[srvV]); err != nil {
		return ServerFrame{}, err
	}
	if m[srvPush] != nil {
		if m[srvID] != nil {
			return ServerFrame{}, Errorf(CodeMalformed, "push with id")
		}
		if m[srvError] != nil {
			return ServerFrame{}, Errorf(CodeMalformed, "push with error")
		}
		name, err := decodeName(m[srvPush], "push")
		if err != nil {
			return ServerFrame{}, err
		}
		body, err := decodeBody(m[srvBody])
		if err != nil {
			return ServerFrame{}, err
		}
		return ServerFrame{Push: &Push{Name: name, Body: body}}, nil
	}
	rawErr, hasErr := m[srvError], m[srvError] != nil
	id, err := decodeID(m[srvID])
	if err != nil && !(hasErr && string(m[srvID]) == "0") { // id 0 answers a frame whose id was unreadable
		return ServerFrame{}, err
	}
	if !hasErr {
		body, err := decodeBody(m[srvBody])
		if err != nil {
			return ServerFrame{}, err
		}
		return ServerFrame{Response: &Response{ID: id, Body: body}}, nil
	}
	if m[srvBody] != nil {
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
	out := make([]byte, 0, 48+len(op)+bodySize(body))
	out = append(out, `{"v":1,"id":`...)
	out = strconv.AppendUint(out, id, 10)
	out = append(out, `,"op":`...)
	out = appendString(out, op)
	if body != nil {
		var err error
		out = append(out, `,"body":`...)
		if out, err = appendBody(out, body); err != nil {
			return nil, fmt.Errorf("wire: encode request %s: %w", op, err)
		}
	}
	return append(out, '}'), nil
}

// EncodeResponse encodes a successful response frame.
func EncodeResponse(id uint64, body any) ([]byte, error) {
	out := make([]byte, 0, 40+bodySize(body))
	out = append(out, `{"v":1,"id":`...)
	out = strconv.AppendUint(out, id, 10)
	out = append(out, `,"body":`...)
	out, err := appendBody(out, body)
	if err != nil {
		return nil, fmt.Errorf("wire: encode response %d: %w", id, err)
	}
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
	out := make([]byte, 0, 32+len(name)+bodySize(body))
	out = append(out, `{"v":1,"push":`...)
	out = appendString(out, name)
	out = append(out, `,"body":`...)
	out, err := appendBody(out, body)
	if err != nil {
		return nil, fmt.Errorf("wire: encode push %s: %w", name, err)
	}
	return append(out, '}'), nil
}

// bodySize guesses the encoded size of a body, to size the frame's buffer once.
func bodySize(body any) int {
	switch b := body.(type) {
	case json.RawMessage:
		return len(b)
	}
	if f, ok := asFast(body); ok {
		return f.jsonSize()
	}
	return 256
}

// asFast returns body as a fastBody, unless it is not one or is a nil pointer to one.
func asFast(body any) (fastBody, bool) {
	f, ok := body.(fastBody)
	if ok {
		if v := reflect.ValueOf(body); v.Kind() == reflect.Pointer && v.IsNil() {
			return nil, false
		}
	}
	return f, ok
}

// appendBody appends the JSON encoding of body, which must be an object ("{}" for nil).
func appendBody(dst []byte, body any) ([]byte, error) {
	switch b := body.(type) {
	case nil:
		return append(dst, emptyBody...), nil
	case json.RawMessage:
		if len(b) == 0 || b[0] != '{' || checkJSON(b) != nil {
			return nil, errors.New("body is not a JSON object")
		}
		return append(dst, b...), nil
	}
	if f, ok := asFast(body); ok {
		return f.appendJSON(dst), nil
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	if len(b) == 0 || b[0] != '{' {
		return nil, errors.New("body is not a JSON object")
	}
	return append(dst, b...), nil
}

// StrictUnmarshal decodes one JSON value into v, rejecting unknown fields and trailing data. Operation handlers
// use it for request bodies. The bodies on the message path (SendRequest, SendResponse, EnvelopePush, Ack) have
// decoders of their own, which are stricter still: names must match exactly and may not repeat (json.go).
func StrictUnmarshal(data []byte, v any) error {
	if f, ok := v.(fastDecoder); ok {
		return f.decodeJSON(data)
	}
	return strictReflect(data, v)
}

// strictReflect is StrictUnmarshal by encoding/json, for the types without a decoder of their own.
func strictReflect(data []byte, v any) error {
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
