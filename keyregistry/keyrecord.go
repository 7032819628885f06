package keyregistry

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/iagon/gridchat/e2ee"
)

// NSKey is the directory namespace of devices' signed messaging keys:
// "/gckey/<device id hex>" holds a KeyRecord.
const NSKey = "gckey"

// KeyRecordVersion is the version of the messaging-key record format.
const KeyRecordVersion = 1

// MaxKeyRecordSize caps an encoded messaging-key record (a device public key
// of about 1.3 KiB and a signed messaging key of about 1.4 KiB).
const MaxKeyRecordSize = 4 << 10

// MessagingKeyKey returns the DHT key of a device's signed messaging key.
func MessagingKeyKey(id e2ee.DeviceID) string { return "/" + NSKey + "/" + id.String() }

// KeyRecord is a device's current signed messaging key as the directory
// stores it: the device's public keys (so a validator can check, offline,
// that the key's device ID is the hash of the signing key and that the
// signing key signed it) and its e2ee.SignedMessagingKey.
//
// Encoding (deterministic CBOR, integer keys; docs/PROTOCOL.md §5):
//
//	{1: version uint, 2: device bstr (e2ee DevicePublic), 3: key bstr (e2ee SignedMessagingKey)}
//
// Whether the device is a current device of an account cannot be known
// offline: lookups check it against the account's chain.
type KeyRecord struct {
	Device e2ee.DevicePublic
	Key    *e2ee.SignedMessagingKey
}

type keyRecordCBOR struct {
	Version uint64 `cbor:"1,keyasint"`
	Device  []byte `cbor:"2,keyasint"`
	Key     []byte `cbor:"3,keyasint"`
}

// marshalKey encodes r canonically, checking the size cap.
func (c codec) marshalKey(r *KeyRecord) ([]byte, error) {
	if r.Key == nil || len(r.Device.Signing) == 0 {
		return nil, fmt.Errorf("encode key record: %w: missing device or key", ErrMalformed)
	}
	b, err := c.enc.Marshal(keyRecordCBOR{Version: KeyRecordVersion, Device: r.Device.Encode(), Key: r.Key.Encode()})
	if err != nil {
		return nil, fmt.Errorf("encode key record: %w", err)
	}
	if len(b) > MaxKeyRecordSize {
		return nil, fmt.Errorf("encode key record: %w: %d bytes, limit %d", ErrTooLarge, len(b), MaxKeyRecordSize)
	}
	return b, nil
}

// unmarshalKey decodes a key record strictly: size cap first, then CBOR
// with no unknown or duplicate keys, known version, both fields decoding
// strictly with e2ee, and only the canonical encoding. It does not verify
// the signature.
func (c codec) unmarshalKey(b []byte) (*KeyRecord, error) {
	const op = "decode key record"
	if len(b) > MaxKeyRecordSize {
		return nil, fmt.Errorf("%s: %w: %d bytes, limit %d", op, ErrTooLarge, len(b), MaxKeyRecordSize)
	}
	var rc keyRecordCBOR
	if err := c.dec.Unmarshal(b, &rc); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", op, ErrMalformed, err)
	}
	if rc.Version != KeyRecordVersion {
		return nil, fmt.Errorf("%s: %w: version %d", op, ErrMalformed, rc.Version)
	}
	dev, err := e2ee.DecodeDevicePublic(rc.Device)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, kind(ErrMalformed, err))
	}
	k, err := e2ee.DecodeSignedMessagingKey(rc.Key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, kind(ErrMalformed, err))
	}
	r := &KeyRecord{Device: dev, Key: k}
	again, err := c.marshalKey(r)
	if err != nil || !bytes.Equal(again, b) {
		return nil, fmt.Errorf("%s: %w: not in canonical encoding", op, ErrMalformed)
	}
	return r, nil
}

// DecodeKeyRecord decodes a messaging-key record strictly (it does not
// verify the signature or expiry; the namespace's validator does).
func DecodeKeyRecord(b []byte) (*KeyRecord, error) {
	r, err := newCodec().unmarshalKey(b)
	if err != nil {
		return nil, fmt.Errorf("keyregistry: %w", err)
	}
	return r, nil
}

// Encode returns the canonical encoding of r.
func (r *KeyRecord) Encode() ([]byte, error) {
	b, err := newCodec().marshalKey(r)
	if err != nil {
		return nil, fmt.Errorf("keyregistry: %w", err)
	}
	return b, nil
}

// keyHeld is an opened, verified messaging-key record. It is immutable.
type keyHeld struct {
	rec *KeyRecord
	raw []byte
}

// olderThan reports whether b should replace a: a later creation time wins; the
// same time prefers the smaller encoding (a stable rule).
func (a *keyHeld) olderThan(b *keyHeld) bool {
	if !a.rec.Key.Created.Equal(b.rec.Key.Created) {
		return a.rec.Key.Created.Before(b.rec.Key.Created)
	}
	return bytes.Compare(b.raw, a.raw) < 0
}

// openKey decodes raw and checks it offline: the device ID is the hash of
// the record's signing key and is the ID the key names, the key is signed by
// that signing key, and it is valid now. want, if not nil, is the device ID
// the record must be filed under.
func (v *verifier) openKey(raw []byte, want *e2ee.DeviceID) (*keyHeld, error) {
	r, err := v.codec.unmarshalKey(raw)
	if err != nil {
		return nil, err
	}
	id := r.Device.ID()
	if want != nil && id != *want {
		return nil, fmt.Errorf("%w: key record of device %s under key of %s", ErrAccountMismatch, id, *want)
	}
	if err := checkMessagingKey(r.Key, r.Device, v.cfg.Now()); err != nil {
		return nil, err
	}
	return &keyHeld{rec: r, raw: raw}, nil
}

// checkMessagingKey verifies k against dev at now and maps e2ee's errors to
// the directory's sentinels.
func checkMessagingKey(k *e2ee.SignedMessagingKey, dev e2ee.DevicePublic, now time.Time) error {
	err := k.Verify(dev, now)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, e2ee.ErrUnknownSender):
		return kind(ErrAccountMismatch, err)
	case errors.Is(err, e2ee.ErrBadSignature):
		return kind(ErrBadSignature, err)
	case errors.Is(err, e2ee.ErrExpired):
		return kind(ErrKeyExpired, err)
	}
	return kind(ErrMalformed, err)
}

// keyValidator checks /gckey/<device id> records (see openKey). Its
// selector prefers the newest creation time, so kad-dht's put path refuses
// to replace a key by an older one (a rollback).
type keyValidator struct{ v *verifier }

func (k keyValidator) open(key string, value []byte) (*keyHeld, error) {
	rest, err := parseKey(key, NSKey)
	if err != nil {
		return nil, err
	}
	id, err := parseHexID(rest)
	if err != nil {
		return nil, err
	}
	did := e2ee.DeviceID(id)
	return k.v.openKey(value, &did)
}

// Validate implements record.Validator.
func (k keyValidator) Validate(key string, value []byte) error {
	_, err := k.open(key, value)
	return err
}

// Select implements record.Validator: invalid values lose, then the newest
// creation time wins, then the smaller encoding.
func (k keyValidator) Select(key string, values [][]byte) (int, error) {
	best := -1
	var bh *keyHeld
	var firstErr error
	for i, val := range values {
		h, err := k.open(key, val)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if bh == nil || bh.olderThan(h) {
			best, bh = i, h
		}
	}
	if bh == nil {
		return 0, fmt.Errorf("keyregistry: select %s: no valid record: %w", key, errors.Join(firstErr))
	}
	return best, nil
}
