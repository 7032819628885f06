package client

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/iagon/gridchat/e2ee"
)

// Store buckets and keys. Every value is deterministic CBOR unless noted.
const (
	bucketSelf      = "self"      // keyDevice: e2ee.DeviceKeys encoding; keyChain: own chain; keyPresenceSeq
	bucketChains    = "chains"    // account hex → last verified chain encoding (never replaced by a shorter one)
	bucketContacts  = "contacts"  // username → account hex
	bucketConvs     = "convs"     // conversation hex → convRecord
	bucketSenders   = "senders"   // conversation hex → senderRecord (this device's current session)
	bucketReceivers = "receivers" // conv/sender/epoch → e2ee.Receiver encoding
	bucketTracks    = "tracks"    // conv/sender → recvTrack
	bucketSent      = "sent"      // conv/seq → sentRecord (recently sent, for resends)
	bucketSeen      = "seen"      // message ID hex → unix ms (envelopes already processed)
	bucketPending   = "pending"   // message ID hex → pendingRecord (sealed in a session not yet received)
	bucketHistory   = "history"   // transfer hex/index → chunk (incoming history transfer)
	bucketFragSets  = "fragsets"  // sender hex/set hex → fragSet (an incomplete set of envelope fragments)
	bucketFrags     = "frags"     // sender hex/set hex/index → a fragment's data (raw bytes)
	msgBucketPrefix = "msgs/"     // msgs/<conv hex>: sent ms/sender/seq → msgRecord (listed in causal order, order.go)

	keyDevice      = "device"
	keyChain       = "chain"
	keyPresenceSeq = "presence-seq"
	keyGateways    = "gateways"
)

func msgBucket(conv e2ee.ConversationID) string { return msgBucketPrefix + conv.String() }

func msgKey(sent time.Time, dev e2ee.DeviceID, seq uint64) string {
	return fmt.Sprintf("%016x/%s/%016x", sent.UnixMilli(), dev, seq)
}

func pairKey(conv e2ee.ConversationID, dev e2ee.DeviceID) string {
	return conv.String() + "/" + dev.String()
}

func receiverKey(conv e2ee.ConversationID, dev e2ee.DeviceID, epoch uint64) string {
	return fmt.Sprintf("%s/%s/%016x", conv, dev, epoch)
}

func sentKey(conv e2ee.ConversationID, seq uint64) string { return fmt.Sprintf("%s/%016x", conv, seq) }

// convRecord is a conversation's persistent state.
type convRecord struct {
	Kind    ConversationKind `cbor:"1,keyasint"`
	Peer    []byte           `cbor:"2,keyasint,omitempty"`
	Group   []byte           `cbor:"3,keyasint,omitempty"` // current signed group-state record
	NextSeq uint64           `cbor:"4,keyasint"`           // the number of this device's next numbered payload
	Safety  string           `cbor:"5,keyasint,omitempty"` // the last safety number computed
	// Clock is the largest causal counter this device has sent or seen (bounded, order.go) in the conversation.
	Clock uint64 `cbor:"6,keyasint,omitempty"`
}

// senderRecordVersion is the version of senderRecord written now. Version 0 (no field 9) is the first shape,
// with the session's key distribution as one encoding in field 6; version 1 holds it in chunks (field 8), each
// a key distribution of its own for some of the recipients. decodeSenderRecord reads both.
const senderRecordVersion = 1

// senderRecord is this device's current sending session in a conversation.
type senderRecord struct {
	Epoch   uint64   `cbor:"1,keyasint"`
	Started int64    `cbor:"2,keyasint"` // unix ms
	Count   uint64   `cbor:"3,keyasint"`
	Members [][]byte `cbor:"4,keyasint"` // member devices of the session (recipients and this device)
	Sender  []byte   `cbor:"5,keyasint"` // e2ee.Sender encoding
	// KeyDist is version 0's single key distribution; decodeSenderRecord moves it to KeyDists.
	KeyDist []byte `cbor:"6,keyasint,omitempty"`
	First   uint64 `cbor:"7,keyasint"` // number of the first numbered payload sealed in this session (0: none yet)
	// KeyDists are the session's key distribution chunks (e2ee.DistributeChunks), in device order: each is
	// attached to the session's first message, and to resends, for its own recipients only.
	KeyDists [][]byte `cbor:"8,keyasint,omitempty"`
	V        uint8    `cbor:"9,keyasint,omitempty"`
}

// decodeSenderRecord reads a stored sender record of any version into the current shape.
func (c codec) decodeSenderRecord(b []byte) (*senderRecord, error) {
	var sr senderRecord
	if err := c.dec.Unmarshal(b, &sr); err != nil {
		return nil, err
	}
	switch sr.V {
	case 0:
		if len(sr.KeyDists) > 0 || len(sr.KeyDist) == 0 {
			return nil, errors.New("version 0 sender record without its key distribution")
		}
		sr.KeyDists, sr.KeyDist = [][]byte{sr.KeyDist}, nil
	case senderRecordVersion:
		if len(sr.KeyDist) > 0 || len(sr.KeyDists) == 0 {
			return nil, fmt.Errorf("version %d sender record without key distribution chunks", sr.V)
		}
	default:
		return nil, fmt.Errorf("sender record version %d", sr.V)
	}
	sr.V = senderRecordVersion
	return &sr, nil
}

// recvTrack follows one sender device's numbering in one conversation.
type recvTrack struct {
	Max     uint64   `cbor:"1,keyasint"`
	Missing []uint64 `cbor:"2,keyasint,omitempty"`
	AskedMS int64    `cbor:"3,keyasint,omitempty"` // when a resend was last requested
}

// sentRecord is one recently sent numbered payload, kept for resend requests.
type sentRecord struct {
	TimeMS  int64  `cbor:"1,keyasint"`
	Epoch   uint64 `cbor:"2,keyasint"`
	Payload []byte `cbor:"3,keyasint"`
}

// pendingRecord is an envelope sealed in a session whose key distribution has not arrived yet.
type pendingRecord struct {
	Sender   []byte `cbor:"1,keyasint"`
	Envelope []byte `cbor:"2,keyasint"`
	TimeMS   int64  `cbor:"3,keyasint"`
}

// msgRecord is one message of the history.
type msgRecord struct {
	Sender     []byte          `cbor:"1,keyasint"`
	Device     []byte          `cbor:"2,keyasint"`
	Seq        uint64          `cbor:"3,keyasint"`
	SentMS     int64           `cbor:"4,keyasint"`
	RecvMS     int64           `cbor:"5,keyasint"`
	Type       PayloadType     `cbor:"6,keyasint"`
	Text       string          `cbor:"7,keyasint,omitempty"`
	Attachment *attachmentBody `cbor:"8,keyasint,omitempty"`
	Group      []byte          `cbor:"9,keyasint,omitempty"`
	Outgoing   bool            `cbor:"10,keyasint,omitempty"`
	Clock      uint64          `cbor:"11,keyasint,omitempty"` // the payload's causal counter (0: none)
	// Payload is the plaintext of a payload whose type this client did not know when it arrived, kept so that
	// a later version that knows the type shows it (decodeMessage).
	Payload []byte `cbor:"12,keyasint,omitempty"`
}

// Conversation IDs of direct and self conversations are derived, so both sides agree without a handshake.
const (
	labelDirectConv = "gridchat/v1/direct-conversation"
	labelSelfConv   = "gridchat/v1/self-conversation"
)

// DirectConversationID returns the ID of the 1:1 conversation between accounts a and b (symmetric).
func DirectConversationID(a, b e2ee.AccountID) e2ee.ConversationID {
	if cmpAccount(a, b) > 0 {
		a, b = b, a
	}
	h := sha256.New()
	h.Write([]byte(labelDirectConv))
	h.Write(a[:])
	h.Write(b[:])
	return e2ee.ConversationID(h.Sum(nil))
}

// SelfConversationID returns the ID of the conversation among account a's own devices.
func SelfConversationID(a e2ee.AccountID) e2ee.ConversationID {
	h := sha256.New()
	h.Write([]byte(labelSelfConv))
	h.Write(a[:])
	return e2ee.ConversationID(h.Sum(nil))
}

func parseAccountHex(s string) (e2ee.AccountID, bool) {
	var a e2ee.AccountID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(a) {
		return a, false
	}
	copy(a[:], b)
	return a, true
}
