package keyregistry

import (
	"bytes"
	"fmt"
	"slices"

	"github.com/fxamacker/cbor/v2"
)

// RecordVersion is the version of the directory record format.
const RecordVersion = 1

// Size caps of the directory record. A record is the unit stored in every
// directory namespace and announced on the directory topic.
const (
	// MaxRecordSize caps an encoded record (chain and receipts together).
	MaxRecordSize = 64 << 10
	// MaxReceipts caps how many receipts a record carries.
	MaxReceipts = 256
	// MaxReceiptSize caps one encoded receipt.
	MaxReceiptSize = 8 << 10
)

// Record is the directory record: an account's full encoded sigchain and the
// publication-log receipts of its statements. The same record is stored under
// the account's key, under the key of each of its devices and under its
// username, and is announced on the directory topic; every reader replays the
// chain before trusting anything in it.
//
// Encoding (deterministic CBOR, integer keys; docs/PROTOCOL.md §5):
//
//	{1: version uint, 2: chain bstr, 3: [* {1: seq uint, 2: receipt bstr}]}
//
// Receipts are sorted by seq, unique, and each names a statement of the chain.
type Record struct {
	// Chain is the e2ee encoding of the account's sigchain.
	Chain []byte
	// Receipts are the log receipts of the chain's statements, by sequence.
	Receipts []Receipt
}

// Receipt is the encoded publication-log receipt of the chain statement with
// sequence number Seq.
type Receipt struct {
	Seq  uint64
	Body []byte
}

type recordCBOR struct {
	Version  uint64        `cbor:"1,keyasint"`
	Chain    []byte        `cbor:"2,keyasint"`
	Receipts []receiptCBOR `cbor:"3,keyasint"`
}

type receiptCBOR struct {
	Seq  uint64 `cbor:"1,keyasint"`
	Body []byte `cbor:"2,keyasint"`
}

// codec holds the strict CBOR modes; it is built once per validator or
// service, never as package state.
type codec struct {
	enc cbor.EncMode
	dec cbor.DecMode
}

func newCodec() codec {
	enc, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(fmt.Sprintf("keyregistry: cbor encoder options: %v", err)) // static options; cannot fail
	}
	dec, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		MaxNestedLevels:   8,
		MaxArrayElements:  MaxReceipts,
		MaxMapPairs:       16,
	}.DecMode()
	if err != nil {
		panic(fmt.Sprintf("keyregistry: cbor decoder options: %v", err)) // static options; cannot fail
	}
	return codec{enc: enc, dec: dec}
}

// marshal encodes r, checking every cap.
func (c codec) marshal(r *Record) ([]byte, error) {
	if err := r.checkShape(); err != nil {
		return nil, err
	}
	rc := recordCBOR{Version: RecordVersion, Chain: r.Chain, Receipts: make([]receiptCBOR, len(r.Receipts))}
	for i, x := range r.Receipts {
		rc.Receipts[i] = receiptCBOR{Seq: x.Seq, Body: x.Body}
	}
	b, err := c.enc.Marshal(rc)
	if err != nil {
		return nil, fmt.Errorf("encode record: %w", err)
	}
	if len(b) > MaxRecordSize {
		return nil, fmt.Errorf("encode record: %w: %d bytes, limit %d", ErrTooLarge, len(b), MaxRecordSize)
	}
	return b, nil
}

// unmarshal decodes a record strictly: size cap first, then CBOR with no
// unknown or duplicate keys, no indefinite lengths, no trailing bytes, known
// version, and only the canonical (deterministic) encoding.
func (c codec) unmarshal(b []byte) (*Record, error) {
	if len(b) > MaxRecordSize {
		return nil, fmt.Errorf("decode record: %w: %d bytes, limit %d", ErrTooLarge, len(b), MaxRecordSize)
	}
	var rc recordCBOR
	if err := c.dec.Unmarshal(b, &rc); err != nil {
		return nil, fmt.Errorf("decode record: %w: %v", ErrMalformed, err)
	}
	if rc.Version != RecordVersion {
		return nil, fmt.Errorf("decode record: %w: version %d", ErrMalformed, rc.Version)
	}
	r := &Record{Chain: rc.Chain, Receipts: make([]Receipt, len(rc.Receipts))}
	for i, x := range rc.Receipts {
		r.Receipts[i] = Receipt{Seq: x.Seq, Body: x.Body}
	}
	if err := r.checkShape(); err != nil {
		return nil, fmt.Errorf("decode record: %w", err)
	}
	// Only the canonical encoding is accepted, so one record has one byte
	// form and equal records compare equal as bytes.
	again, err := c.marshal(r)
	if err != nil || !bytes.Equal(again, b) {
		return nil, fmt.Errorf("decode record: %w: not in canonical encoding", ErrMalformed)
	}
	return r, nil
}

func (r *Record) checkShape() error {
	if len(r.Chain) == 0 {
		return fmt.Errorf("%w: empty chain", ErrMalformed)
	}
	if len(r.Chain) > MaxRecordSize {
		return fmt.Errorf("%w: chain of %d bytes, limit %d", ErrTooLarge, len(r.Chain), MaxRecordSize)
	}
	if len(r.Receipts) > MaxReceipts {
		return fmt.Errorf("%w: %d receipts, limit %d", ErrTooLarge, len(r.Receipts), MaxReceipts)
	}
	for i, x := range r.Receipts {
		if len(x.Body) == 0 {
			return fmt.Errorf("%w: empty receipt for seq %d", ErrMalformed, x.Seq)
		}
		if len(x.Body) > MaxReceiptSize {
			return fmt.Errorf("%w: receipt for seq %d of %d bytes, limit %d", ErrTooLarge, x.Seq, len(x.Body), MaxReceiptSize)
		}
		if i > 0 && r.Receipts[i-1].Seq >= x.Seq {
			return fmt.Errorf("%w: receipts not in strictly increasing seq order", ErrMalformed)
		}
	}
	return nil
}

// receiptFor returns the receipt body for seq, or nil.
func (r *Record) receiptFor(seq uint64) []byte {
	i, ok := slices.BinarySearchFunc(r.Receipts, seq, func(x Receipt, s uint64) int {
		switch {
		case x.Seq < s:
			return -1
		case x.Seq > s:
			return 1
		}
		return 0
	})
	if !ok {
		return nil
	}
	return r.Receipts[i].Body
}

// DecodeRecord decodes a directory record strictly (it does not replay the
// chain; e2ee.Replay does).
func DecodeRecord(b []byte) (*Record, error) {
	r, err := newCodec().unmarshal(b)
	if err != nil {
		return nil, fmt.Errorf("keyregistry: %w", err)
	}
	return r, nil
}

// Encode returns the canonical encoding of r.
func (r *Record) Encode() ([]byte, error) {
	b, err := newCodec().marshal(r)
	if err != nil {
		return nil, fmt.Errorf("keyregistry: %w", err)
	}
	return b, nil
}
