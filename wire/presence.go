package wire

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/iagon/gridchat/e2ee"
)

// PresencePurpose is the e2ee signed-request purpose of presence records: their signature context is
// "gridchat/v1/req/presence", used for nothing else.
const PresencePurpose = "presence"

// Presence record limits.
const (
	PresenceVersion    = 1
	MaxPresenceSize    = 4096 // encoded signed record
	MaxPresenceAddrs   = 16
	MaxPresenceAddrLen = 256
	MaxGatewayLen      = e2ee.MaxGatewayIDLen
	// DefaultPresenceTTL is the longest a presence record may live after it was signed; a connected client
	// refreshes its records with the "presence" operation before they expire.
	DefaultPresenceTTL = time.Hour
)

// Presence record errors.
var (
	// ErrPresenceInvalid: the record does not decode strictly or its signature does not verify.
	ErrPresenceInvalid = errors.New("wire: invalid presence record")
	// ErrPresenceExpired: the record's expiry has passed.
	ErrPresenceExpired = errors.New("wire: presence record expired")
)

// Presence is a device's statement of where it is connected: the gateway peer and its addresses, with a
// sequence number (higher wins) and an expiry, or Online=false to withdraw. The device signs it; the record
// carries the device's Ed25519 public key so a validator can check it without a lookup (DeviceID is the hash of
// that key).
type Presence struct {
	Device     DeviceID
	SigningKey ed25519.PublicKey
	Gateway    string   // the gateway's libp2p peer ID, as in the hello push
	Addrs      []string // the gateway's libp2p multiaddrs, as in the hello push
	Seq        uint64
	Expires    time.Time
	Online     bool
	SignedAt   time.Time
}

// presenceBody is the signed CBOR body of a presence record (docs/PROTOCOL.md §5).
type presenceBody struct {
	Version uint64   `cbor:"1,keyasint"`
	Key     []byte   `cbor:"2,keyasint"`
	Gateway string   `cbor:"3,keyasint"`
	Addrs   []string `cbor:"4,keyasint"`
	Seq     uint64   `cbor:"5,keyasint"`
	Expires uint64   `cbor:"6,keyasint"`
	Online  bool     `cbor:"7,keyasint"`
}

// signedPresenceRecord is the encoded record: the body and the device's e2ee signed request over it.
type signedPresenceRecord struct {
	Body    []byte `cbor:"1,keyasint"`
	Request []byte `cbor:"2,keyasint"`
}

func cborModes() (cbor.EncMode, cbor.DecMode, error) {
	enc, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		return nil, nil, err
	}
	dec, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		MaxArrayElements:  MaxPresenceAddrs,
		MaxMapPairs:       16,
		MaxNestedLevels:   4,
	}.DecMode()
	return enc, dec, err
}

// SignPresence makes dev's signed presence record from p (p.Device and p.SigningKey are taken from dev).
func SignPresence(dev *e2ee.DeviceKeys, p Presence, now time.Time) ([]byte, error) {
	const op = "wire: sign presence"
	if p.Gateway == "" || len(p.Gateway) > MaxGatewayLen || len(p.Addrs) > MaxPresenceAddrs {
		return nil, fmt.Errorf("%s: gateway or addresses out of bounds", op)
	}
	for _, a := range p.Addrs {
		if len(a) == 0 || len(a) > MaxPresenceAddrLen {
			return nil, fmt.Errorf("%s: address of %d bytes", op, len(a))
		}
	}
	enc, _, err := cborModes()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	body, err := enc.Marshal(presenceBody{Version: PresenceVersion, Key: dev.Public().Signing, Gateway: p.Gateway,
		Addrs: p.Addrs, Seq: p.Seq, Expires: uint64(p.Expires.Unix()), Online: p.Online})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	req, err := e2ee.SignRequest(dev, PresencePurpose, body, now)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	out, err := enc.Marshal(signedPresenceRecord{Body: body, Request: req.Encode()})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return out, nil
}

// OpenPresence decodes a signed presence record strictly and verifies it: canonical CBOR, the device ID is the
// hash of the embedded key, the signature verifies for purpose "presence", the record was signed within maxTTL
// (plus e2ee.ClockSkew) of now and expires no later than maxTTL after signing. An expired record returns the
// decoded record with ErrPresenceExpired, so selectors can still order it.
func OpenPresence(data []byte, now time.Time, maxTTL time.Duration) (*Presence, error) {
	if len(data) > MaxPresenceSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrPresenceInvalid, len(data))
	}
	enc, dec, err := cborModes()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPresenceInvalid, err)
	}
	var rec signedPresenceRecord
	if err := dec.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPresenceInvalid, err)
	}
	var body presenceBody
	if err := dec.Unmarshal(rec.Body, &body); err != nil {
		return nil, fmt.Errorf("%w: body: %v", ErrPresenceInvalid, err)
	}
	// Only the canonical encoding is accepted, so a record has exactly one byte form.
	if again, err := enc.Marshal(rec); err != nil || !bytes.Equal(again, data) {
		return nil, fmt.Errorf("%w: not canonical CBOR", ErrPresenceInvalid)
	}
	if again, err := enc.Marshal(body); err != nil || !bytes.Equal(again, rec.Body) {
		return nil, fmt.Errorf("%w: body not canonical CBOR", ErrPresenceInvalid)
	}
	if body.Version != PresenceVersion {
		return nil, fmt.Errorf("%w: version %d", ErrPresenceInvalid, body.Version)
	}
	if len(body.Key) != ed25519.PublicKeySize || body.Gateway == "" || len(body.Gateway) > MaxGatewayLen ||
		body.Expires > 1<<62 {
		return nil, fmt.Errorf("%w: bad key, gateway or expiry", ErrPresenceInvalid)
	}
	for _, a := range body.Addrs {
		if len(a) == 0 || len(a) > MaxPresenceAddrLen {
			return nil, fmt.Errorf("%w: address of %d bytes", ErrPresenceInvalid, len(a))
		}
	}
	req, err := e2ee.DecodeSignedRequest(rec.Request)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPresenceInvalid, err)
	}
	pub := e2ee.DevicePublic{Suite: e2ee.SuiteV1, Signing: ed25519.PublicKey(body.Key)}
	if err := req.Verify(pub, PresencePurpose, rec.Body, now, maxTTL+e2ee.ClockSkew); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPresenceInvalid, err)
	}
	p := &Presence{
		Device: DeviceID(pub.ID()), SigningKey: pub.Signing, Gateway: body.Gateway, Addrs: body.Addrs,
		Seq: body.Seq, Expires: time.Unix(int64(body.Expires), 0).UTC(), Online: body.Online, SignedAt: req.Time,
	}
	if p.Expires.After(p.SignedAt.Add(maxTTL)) {
		return nil, fmt.Errorf("%w: expires %s, more than %s after signing", ErrPresenceInvalid, p.Expires, maxTTL)
	}
	if !now.Before(p.Expires) {
		return p, fmt.Errorf("%w: at %s", ErrPresenceExpired, p.Expires)
	}
	return p, nil
}
