package client

import (
	"fmt"
)

// EnvelopeVersion is the version of the client envelope: the bytes a client puts in the "ciphertext" field of a
// send (docs/PROTOCOL.md §9.1).
const EnvelopeVersion = 1

// Envelope caps.
const (
	// MaxEnvelopeBytes caps one encoded envelope.
	MaxEnvelopeBytes = 2 << 20
	maxKeyDistBytes  = 1536 << 10
	maxMessageBytes  = MaxPayloadBytes + 4096
	maxEnvelopeKeys  = 4
)

// envelope is what travels through the grid, opaque to nodes: an optional key distribution (the first message
// of a sender's session, and every resent message, carry the chunk that names the recipient) and one e2ee
// message sealed in that session. An envelope over the grid's ciphertext limit travels as fragments: envelopes
// holding only Frag, reassembled by the receiver (fragment.go).
type envelope struct {
	V        uint8     `cbor:"1,keyasint"`
	KeyDist  []byte    `cbor:"2,keyasint,omitempty"` // e2ee.KeyDistribution encoding
	Message  []byte    `cbor:"3,keyasint,omitempty"` // e2ee message encoding
	Keys     [][]byte  `cbor:"4,keyasint,omitempty"` // the sender device's signed messaging key(s)
	WantKeys bool      `cbor:"5,keyasint,omitempty"` // the sender asks for the recipient's signed messaging key
	Frag     *fragment `cbor:"6,keyasint,omitempty"` // one piece of a larger envelope; then no other field
}

func (c codec) encodeEnvelope(e *envelope) ([]byte, error) {
	e.V = EnvelopeVersion
	b, err := c.enc.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("client: encode envelope: %w", err)
	}
	if len(b) > MaxEnvelopeBytes {
		return nil, fmt.Errorf("client: envelope of %d bytes over the %d-byte cap", len(b), MaxEnvelopeBytes)
	}
	return b, nil
}

// decodeEnvelope decodes and checks an envelope. It ignores the elective keys it does not know, in the envelope
// and in its fragment, after checking that their values are CBOR within the codec's limits, and refuses a
// must-understand key with an error naming it (docs/PROTOCOL.md §9.1 "Extensions"). An envelope that carries
// nothing this client knows besides elective keys decodes, and is empty.
func (c codec) decodeEnvelope(b []byte) (*envelope, error) {
	if len(b) > MaxEnvelopeBytes {
		return nil, fmt.Errorf("%w: envelope of %d bytes", ErrBadPayload, len(b))
	}
	var e envelope
	sc, err := c.decodeExtensible(c.envelopeSchema, b, &e)
	if err != nil {
		return nil, err
	}
	if e.V != EnvelopeVersion {
		return nil, fmt.Errorf("%w: envelope version %d", ErrBadPayload, e.V)
	}
	if e.Frag != nil {
		if len(e.KeyDist) > 0 || len(e.Message) > 0 || len(e.Keys) > 0 || e.WantKeys {
			return nil, fmt.Errorf("%w: fragment with other envelope fields", ErrBadPayload)
		}
		if err := e.Frag.validate(); err != nil {
			return nil, err
		}
		return &e, nil
	}
	if len(e.Message) > maxMessageBytes || len(e.KeyDist) > maxKeyDistBytes || len(e.Keys) > maxEnvelopeKeys ||
		(len(e.Message) == 0 && len(e.KeyDist) > 0) || (e.empty() && sc.elective == 0) {
		return nil, fmt.Errorf("%w: envelope fields", ErrBadPayload)
	}
	return &e, nil
}

// empty reports whether e carries nothing this client processes: no message, no keys, no key request and no
// fragment. Only an envelope of a later version, with elective keys alone, decodes empty.
func (e *envelope) empty() bool {
	return len(e.Message) == 0 && len(e.Keys) == 0 && !e.WantKeys && e.Frag == nil
}
