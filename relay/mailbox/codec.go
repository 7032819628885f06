package mailbox

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/iagon/gridchat/wire"
)

// Frame types of the mailbox stream protocol (<prefix>/mailbox/1.0.0). Never renumbered.
const (
	tPut          = 1  // sender's gateway → replica: store Env
	tPutResult    = 2  // replica → gateway: Status, Message, Receipt
	tFetch        = 3  // gateway → replica: DevicePublic, Request, Body (signed "mailbox-fetch")
	tEnvelope     = 4  // replica → gateway (fetch) or either way (sync): Env
	tTombstone    = 5  // replica → gateway: Tomb
	tCaughtUp     = 6  // replica → gateway: every envelope held at the start of the fetch was sent
	tAck          = 7  // gateway → replica inside a fetch: delete IDs (Seq numbers the batch)
	tAckResult    = 8  // replica → gateway: Seq, Status, Count
	tDelete       = 9  // gateway → replica: DevicePublic, Request, Body (signed "mailbox-delete")
	tDeleteResult = 10 // replica → gateway: Status, Message, Count
	tSync         = 11 // replica → replica: Device, IDs (held), Tombstoned, Deleted
	tSyncReply    = 12 // replica → replica: Deleted, Want (IDs it lacks); then tEnvelope frames, then tEnd
	tEnd          = 13 // end of a sequence of frames
	tError        = 14 // Status, Message: the request was refused
)

// Request purposes (e2ee.SignRequest) for fetch and delete.
const (
	PurposeFetch  = "mailbox-fetch"
	PurposeDelete = "mailbox-delete"
)

// Frame size limits.
const (
	frameOverhead   = 4 << 10 // CBOR framing and fixed fields around a ciphertext
	maxControlFrame = 1 << 20 // a frame without ciphertext (summaries, ack batches)
	maxAckBatch     = 1024    // message IDs in one ack or delete
)

// envRec is an envelope as stored and as carried in frames.
type envRec struct {
	MessageID  []byte `cbor:"1,keyasint"`
	Sender     []byte `cbor:"2,keyasint"`
	Recipient  []byte `cbor:"3,keyasint"`
	Stamp      int64  `cbor:"4,keyasint"`
	Ciphertext []byte `cbor:"5,keyasint"`
}

// tombRec is a tombstone as stored and as carried in frames.
type tombRec struct {
	MessageID []byte `cbor:"1,keyasint"`
	Sender    []byte `cbor:"2,keyasint"`
	Stamp     int64  `cbor:"3,keyasint"`
	ExpiredMS int64  `cbor:"4,keyasint"`
	Reason    string `cbor:"5,keyasint"`
}

// markRec is a delete mark in a sync frame.
type markRec struct {
	MessageID []byte `cbor:"1,keyasint"`
	TimeNS    int64  `cbor:"2,keyasint"`
}

// frame is one message of the mailbox protocol. Which fields a type may carry is checked by the receiver.
type frame struct {
	Type         uint8     `cbor:"1,keyasint"`
	Status       Status    `cbor:"2,keyasint,omitempty"`
	Message      string    `cbor:"3,keyasint,omitempty"`
	Env          *envRec   `cbor:"4,keyasint,omitempty"`
	Receipt      []byte    `cbor:"5,keyasint,omitempty"`
	Device       []byte    `cbor:"6,keyasint,omitempty"`
	DevicePublic []byte    `cbor:"7,keyasint,omitempty"`
	Request      []byte    `cbor:"8,keyasint,omitempty"`
	Body         []byte    `cbor:"9,keyasint,omitempty"`
	IDs          [][]byte  `cbor:"10,keyasint,omitempty"`
	Tombstoned   [][]byte  `cbor:"11,keyasint,omitempty"`
	Deleted      []markRec `cbor:"12,keyasint,omitempty"`
	Tomb         *tombRec  `cbor:"13,keyasint,omitempty"`
	Seq          uint64    `cbor:"14,keyasint,omitempty"`
	Count        uint64    `cbor:"15,keyasint,omitempty"`
}

// fetchBody is the body of a signed fetch request.
type fetchBody struct {
	Device []byte `cbor:"1,keyasint"`
	Follow bool   `cbor:"2,keyasint,omitempty"` // keep the stream open and push new envelopes
}

// deleteBody is the body of a signed delete request.
type deleteBody struct {
	Device []byte   `cbor:"1,keyasint"`
	IDs    [][]byte `cbor:"2,keyasint"`
}

type codec struct {
	enc cbor.EncMode
	dec cbor.DecMode
}

func newCodec() codec {
	enc, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic("mailbox: cbor encoder: " + err.Error())
	}
	dec, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		MaxNestedLevels:   6,
		MaxArrayElements:  4 * DefaultLimits().MaxCount,
		MaxMapPairs:       32,
	}.DecMode()
	if err != nil {
		panic("mailbox: cbor decoder: " + err.Error())
	}
	return codec{enc: enc, dec: dec}
}

// cb is the package's codec; encoders and decoders are immutable and safe for concurrent use.
var cb = newCodec()

func (c codec) marshal(v any) []byte {
	b, err := c.enc.Marshal(v)
	if err != nil {
		// Only our own structs of byte strings, integers and strings are marshalled.
		panic("mailbox: encode: " + err.Error())
	}
	return b
}

func toRec(e *Envelope) *envRec {
	return &envRec{MessageID: e.MessageID[:], Sender: e.Sender[:], Recipient: e.Recipient[:], Stamp: e.Stamp,
		Ciphertext: e.Ciphertext}
}

func fromRec(r *envRec) (Envelope, error) {
	var e Envelope
	if r == nil || len(r.MessageID) != wire.MessageIDSize || len(r.Sender) != wire.DeviceIDSize ||
		len(r.Recipient) != wire.DeviceIDSize || len(r.Ciphertext) == 0 || r.Stamp <= 0 {
		return e, errorf(StatusMalformed, "bad envelope fields")
	}
	copy(e.MessageID[:], r.MessageID)
	copy(e.Sender[:], r.Sender)
	copy(e.Recipient[:], r.Recipient)
	e.Stamp = r.Stamp
	e.Ciphertext = r.Ciphertext
	return e, nil
}

func encodeEnvelope(e *Envelope) []byte { return cb.marshal(toRec(e)) }

func decodeEnvelope(b []byte) (Envelope, error) {
	var r envRec
	if err := cb.dec.Unmarshal(b, &r); err != nil {
		return Envelope{}, errorf(StatusMalformed, "envelope record: %v", err)
	}
	return fromRec(&r)
}

func toTombRec(t *Tombstone) *tombRec {
	return &tombRec{MessageID: t.MessageID[:], Sender: t.Sender[:], Stamp: t.Stamp,
		ExpiredMS: t.Expired.UnixMilli(), Reason: t.Reason}
}

func fromTombRec(r *tombRec) (Tombstone, error) {
	var t Tombstone
	if r == nil || len(r.MessageID) != wire.MessageIDSize || len(r.Sender) != wire.DeviceIDSize ||
		(r.Reason != ReasonTTL && r.Reason != ReasonCount) {
		return t, errorf(StatusMalformed, "bad tombstone fields")
	}
	copy(t.MessageID[:], r.MessageID)
	copy(t.Sender[:], r.Sender)
	t.Stamp = r.Stamp
	t.Expired = time.UnixMilli(r.ExpiredMS).UTC()
	t.Reason = r.Reason
	return t, nil
}

func encodeTombstone(t *Tombstone) []byte { return cb.marshal(toTombRec(t)) }

func decodeTombstone(b []byte) (Tombstone, error) {
	var r tombRec
	if err := cb.dec.Unmarshal(b, &r); err != nil {
		return Tombstone{}, errorf(StatusMalformed, "tombstone record: %v", err)
	}
	return fromTombRec(&r)
}

func parseIDs(raw [][]byte, max int) ([]wire.MessageID, error) {
	if len(raw) > max {
		return nil, errorf(StatusMalformed, "%d message IDs (max %d)", len(raw), max)
	}
	out := make([]wire.MessageID, len(raw))
	for i, b := range raw {
		if len(b) != wire.MessageIDSize {
			return nil, errorf(StatusMalformed, "message ID of %d bytes", len(b))
		}
		copy(out[i][:], b)
	}
	return out, nil
}

func idBytes(ids []wire.MessageID) [][]byte {
	out := make([][]byte, len(ids))
	for i := range ids {
		out[i] = ids[i][:]
	}
	return out
}

// writeFrame writes f with its 4-byte big-endian length prefix.
func writeFrame(w io.Writer, f *frame) error {
	b := cb.marshal(f)
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(b)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := w.Write(b)
	return err
}

// readFrame reads one frame of at most max bytes and decodes it strictly.
func readFrame(r io.Reader, max int) (*frame, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > uint32(max) {
		return nil, errorf(StatusMalformed, "frame of %d bytes (max %d)", n, max)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, errorf(StatusMalformed, "truncated frame: %v", err)
	}
	return decodeFrame(buf)
}

// decodeFrame decodes one frame body strictly: unknown or duplicate keys, indefinite lengths, tags, trailing
// bytes and unknown frame types are errors.
func decodeFrame(b []byte) (*frame, error) {
	var f frame
	if err := cb.dec.Unmarshal(b, &f); err != nil {
		return nil, errorf(StatusMalformed, "frame: %v", err)
	}
	if f.Type < tPut || f.Type > tError {
		return nil, errorf(StatusMalformed, "unknown frame type %d", f.Type)
	}
	if !bytes.Equal(cb.marshal(&f), b) {
		return nil, errorf(StatusMalformed, "frame not in canonical form")
	}
	return &f, nil
}

func errFrame(err error) *frame {
	msg := err.Error()
	var me *Error
	if errors.As(err, &me) {
		msg = me.Message
	}
	if len(msg) > 200 {
		msg = msg[:200]
	}
	return &frame{Type: tError, Status: statusOf(err), Message: msg}
}

func (f *frame) err() error {
	if f.Type != tError {
		return nil
	}
	if f.Status == StatusOK {
		return errorf(StatusMalformed, "error frame without status")
	}
	return &Error{Status: f.Status, Message: f.Message}
}

func fmtDev(d wire.DeviceID) string { return fmt.Sprintf("%x", d[:6]) }
