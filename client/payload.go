package client

import (
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
)

// PayloadVersion is the version of the plaintext framing inside message ciphertexts (docs/PROTOCOL.md §9).
const PayloadVersion = 1

// PayloadType says what a decrypted message carries. Values are wire codes and never renumbered. A payload
// may carry a type this client does not know, from a newer client (docs/PROTOCOL.md §9.3 "Extensions"): it is
// numbered when it carries a sequence number, and surfaces as a Message with Unsupported set.
type PayloadType uint8

// Payload types.
const (
	// PayloadText is a text message. Numbered.
	PayloadText PayloadType = 1
	// PayloadAttachment is a small file, encrypted like any message. Numbered.
	PayloadAttachment PayloadType = 2
	// PayloadGroupState carries a new admin-signed group-state record (create, add, remove, rename). Numbered.
	PayloadGroupState PayloadType = 3
	// PayloadResendRequest asks the sender's devices to resend numbered messages. Not numbered.
	PayloadResendRequest PayloadType = 4
	// PayloadHistory carries one chunk of a conversation-history archive for a newly linked device. Not
	// numbered.
	PayloadHistory PayloadType = 5
)

// String names the type.
func (t PayloadType) String() string {
	switch t {
	case PayloadText:
		return "text"
	case PayloadAttachment:
		return "attachment"
	case PayloadGroupState:
		return "group-state"
	case PayloadResendRequest:
		return "resend-request"
	case PayloadHistory:
		return "history"
	}
	return fmt.Sprintf("payload(%d)", uint8(t))
}

// known reports whether this client understands payloads of type t.
func (t PayloadType) known() bool { return t >= PayloadText && t <= PayloadHistory }

// numbered reports whether payloads of known type t carry a sender sequence number.
func (t PayloadType) numbered() bool {
	return t == PayloadText || t == PayloadAttachment || t == PayloadGroupState
}

// numbered reports whether p carries a sender sequence number: as its type says for a known type, and for a
// type this client does not know, when it has one (key 3 present).
func (p *payload) numbered() bool {
	if p.Type.known() {
		return p.Type.numbered()
	}
	return p.Seq != 0
}

// Payload caps.
const (
	// MaxTextBytes caps the text of one message.
	MaxTextBytes = 64 << 10
	// MaxAttachmentBytes caps the content of one attachment. A sealed attachment is larger than the grid's
	// envelope limit (64 KiB by default): it travels as fragments (docs/PROTOCOL.md §9.1).
	MaxAttachmentBytes = 256 << 10
	// MaxPayloadBytes caps one encoded payload.
	MaxPayloadBytes = 512 << 10
	// MaxResendSeqs caps how many numbers one resend request names.
	MaxResendSeqs = 256
	maxNameBytes  = 255
	maxGroupBytes = 64 << 10
)

// Causal order (docs/PROTOCOL.md §9.3). Every numbered payload carries a counter, a hybrid logical clock: the
// sender sets it to its clock (corrected to the grid's, clock.go) in Unix milliseconds, or to 1 + the largest
// counter it has seen or sent in the conversation if that is larger. A conversation lists its messages by
// (counter, sent time, sender device, number), so every device that holds the same messages lists them alike,
// and a message lists after every message its sender had received. A payload without a counter (from an older
// client) counts as its sent time.
const (
	// MaxClock is the largest counter a payload may carry (2^53 − 1, exact in a JavaScript number); a payload
	// with a larger one is refused as a bad payload.
	MaxClock = 1<<53 - 1
	// MaxClockLead bounds how far ahead of its own clock a device follows a received counter: it records at
	// most its clock + MaxClockLead as seen, so one member with a bad clock (or a malicious one) cannot push
	// the counters of the others arbitrarily far. Both clocks are corrected to the grid's (clock.go), so an
	// honest device's counters stay within the lead whatever its own clock says (up to MaxClockOffset). A
	// message with a counter beyond the lead (from a client that does not correct its clock, or a malicious
	// one) still lists by its own counter, on every device alike; only the replies to it may list before it.
	MaxClockLead = time.Hour
)

// payload is the plaintext of one message (docs/PROTOCOL.md §9.3): a CBOR map with small integer keys.
type payload struct {
	V          uint8           `cbor:"1,keyasint"`
	Type       PayloadType     `cbor:"2,keyasint"`
	Seq        uint64          `cbor:"3,keyasint,omitempty"`
	SentMS     int64           `cbor:"4,keyasint"`
	Text       string          `cbor:"5,keyasint,omitempty"`
	Attachment *attachmentBody `cbor:"6,keyasint,omitempty"`
	Group      []byte          `cbor:"7,keyasint,omitempty"`
	Resend     *resendBody     `cbor:"8,keyasint,omitempty"`
	History    *historyBody    `cbor:"9,keyasint,omitempty"`
	Resent     bool            `cbor:"10,keyasint,omitempty"`
	First      uint64          `cbor:"11,keyasint,omitempty"` // number of the sender's first numbered payload in this session
	Peer       []byte          `cbor:"12,keyasint,omitempty"` // direct conversations: the sender's peer account
	// Clock is a numbered payload's causal counter (0: a payload from a client that predates it). See order.
	Clock uint64 `cbor:"13,keyasint,omitempty"`
	// raw is the encoded payload when its type is unknown to this client (decodePayload), kept in the history.
	raw []byte
}

type attachmentBody struct {
	Name string `cbor:"1,keyasint"`
	MIME string `cbor:"2,keyasint"`
	Data []byte `cbor:"3,keyasint"`
}

type resendBody struct {
	Sender []byte   `cbor:"1,keyasint"`           // the device whose messages are missing (32 bytes)
	Seqs   []uint64 `cbor:"2,keyasint,omitempty"` // ascending, distinct
	Epoch  uint64   `cbor:"3,keyasint,omitempty"` // or: resend everything sent in this session (its key never arrived)
}

type historyBody struct {
	Transfer []byte `cbor:"1,keyasint"` // 16 random bytes naming one history transfer
	Index    uint32 `cbor:"2,keyasint"`
	Last     bool   `cbor:"3,keyasint,omitempty"`
	Data     []byte `cbor:"4,keyasint"`
	Key      []byte `cbor:"5,keyasint,omitempty"` // chunk 0: the archive's recovery key, in its text form
}

// codec holds the strict CBOR modes of the client's formats. It is built once per Client.
type codec struct {
	enc cbor.EncMode
	dec cbor.DecMode
	// extDec decodes the maps a later version may extend (payloads, envelopes, group-state records): as dec,
	// but it skips map keys without a field, which decodeExtensible checked first against their schema
	// (decode.go).
	extDec cbor.DecMode
	schemas
}

func newCodec() (codec, error) {
	enc, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		return codec{}, err
	}
	opts := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		MaxNestedLevels:   payloadMaxNesting,
		MaxArrayElements:  4096,
		MaxMapPairs:       32,
	}
	dec, err := opts.DecMode()
	if err != nil {
		return codec{}, err
	}
	opts.ExtraReturnErrors = cbor.ExtraDecErrorNone
	extDec, err := opts.DecMode()
	if err != nil {
		return codec{}, err
	}
	sch, err := newSchemas()
	if err != nil {
		return codec{}, err
	}
	return codec{enc: enc, dec: dec, extDec: extDec, schemas: sch}, nil
}

// ErrBadPayload is returned for a decrypted message whose plaintext is not a valid payload.
var ErrBadPayload = errors.New("client: bad payload")

func (p *payload) validate() error {
	if p.V != PayloadVersion {
		return fmt.Errorf("%w: version %d", ErrBadPayload, p.V)
	}
	if p.Type == 0 {
		return fmt.Errorf("%w: type 0", ErrBadPayload)
	}
	numbered := p.numbered()
	if numbered != (p.Seq != 0) {
		return fmt.Errorf("%w: %s with sequence number %d", ErrBadPayload, p.Type, p.Seq)
	}
	if p.Resent && !numbered {
		return fmt.Errorf("%w: resent %s", ErrBadPayload, p.Type)
	}
	if len(p.Text) > MaxTextBytes || !utf8.ValidString(p.Text) {
		return fmt.Errorf("%w: text", ErrBadPayload)
	}
	if len(p.Group) > maxGroupBytes || (len(p.Group) != 0 && !numbered) {
		return fmt.Errorf("%w: group record of %d bytes", ErrBadPayload, len(p.Group))
	}
	if p.Clock > MaxClock || (p.Clock != 0 && !numbered) {
		return fmt.Errorf("%w: %s with counter %d", ErrBadPayload, p.Type, p.Clock)
	}
	if (len(p.Peer) != 0 && len(p.Peer) != 32) || p.First > p.Seq {
		return fmt.Errorf("%w: peer or first number", ErrBadPayload)
	}
	// A body keeps its format in a payload of any type, one this client does not know included.
	body := 0
	if a := p.Attachment; a != nil {
		body++
		if len(a.Data) > MaxAttachmentBytes || len(a.Name) > maxNameBytes || len(a.MIME) > maxNameBytes ||
			!utf8.ValidString(a.Name) || !utf8.ValidString(a.MIME) {
			return fmt.Errorf("%w: attachment", ErrBadPayload)
		}
	}
	if r := p.Resend; r != nil {
		body++
		if len(r.Sender) != 32 || (len(r.Seqs) == 0) == (r.Epoch == 0) || len(r.Seqs) > MaxResendSeqs {
			return fmt.Errorf("%w: resend request", ErrBadPayload)
		}
		for i, s := range r.Seqs {
			if s == 0 || (i > 0 && s <= r.Seqs[i-1]) {
				return fmt.Errorf("%w: resend request numbers not ascending", ErrBadPayload)
			}
		}
	}
	if h := p.History; h != nil {
		body++
		if len(h.Transfer) != 16 || len(h.Data) > MaxPayloadBytes || len(h.Key) > 128 || (h.Index == 0) != (len(h.Key) > 0) {
			return fmt.Errorf("%w: history chunk", ErrBadPayload)
		}
	}
	switch p.Type {
	case PayloadText:
		if body != 0 || p.Text == "" {
			return fmt.Errorf("%w: text with a body", ErrBadPayload)
		}
	case PayloadAttachment:
		if body != 1 || p.Attachment == nil {
			return fmt.Errorf("%w: attachment", ErrBadPayload)
		}
	case PayloadGroupState:
		if body != 0 || len(p.Group) == 0 {
			return fmt.Errorf("%w: group-state without record", ErrBadPayload)
		}
	case PayloadResendRequest:
		if body != 1 || p.Resend == nil {
			return fmt.Errorf("%w: resend request", ErrBadPayload)
		}
	case PayloadHistory:
		if body != 1 || p.History == nil {
			return fmt.Errorf("%w: history chunk", ErrBadPayload)
		}
	}
	return nil
}

func (c codec) encodePayload(p *payload) ([]byte, error) {
	p.V = PayloadVersion
	if err := p.validate(); err != nil {
		return nil, err
	}
	b, err := c.enc.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("client: encode payload: %w", err)
	}
	if len(b) > MaxPayloadBytes {
		return nil, fmt.Errorf("%w: %d bytes over cap", ErrBadPayload, len(b))
	}
	return b, nil
}

// decodePayload decodes and validates a payload. It ignores the elective keys it does not know, after checking
// that their values are CBOR within the payload's limits, and refuses a must-understand key (decode.go).
func (c codec) decodePayload(b []byte) (*payload, error) {
	if len(b) > MaxPayloadBytes {
		return nil, fmt.Errorf("%w: %d bytes over cap", ErrBadPayload, len(b))
	}
	var p payload
	sc, err := c.decodeExtensible(c.payloadSchema, b, &p)
	if err != nil {
		return nil, err
	}
	if sc.present&(1<<3) != 0 && p.Seq == 0 {
		return nil, fmt.Errorf("%w: sequence number 0", ErrBadPayload)
	}
	if err := p.validate(); err != nil {
		return nil, err
	}
	if !p.Type.known() {
		p.raw = slices.Clone(b)
	}
	return &p, nil
}
