package wire

import (
	"fmt"
)

// Operation and push names of protocol version 1.
const (
	OpAuth     = "auth"     // authenticate the connection as a device (AuthRequest → AuthResponse)
	OpPresence = "presence" // replace the connection's presence records (PresenceUpdate → {})
	OpSend     = "send"     // send one envelope to devices (SendRequest → SendResponse)
	OpAck      = "ack"      // acknowledge received envelopes, one or a batch (Ack → {})
	OpPing     = "ping"     // application-level liveness check ({} → {})

	PushHello    = "hello"    // first frame on every connection (Hello)
	PushEnvelope = "envelope" // an envelope for this device (EnvelopePush)
)

// Sizes of the binary identifiers used in bodies.
const (
	DeviceIDSize  = 32
	MessageIDSize = 16
	NonceSize     = 32
)

// DeviceID is a device identifier (e2ee.DeviceID has the same representation).
type DeviceID [DeviceIDSize]byte

// MessageID is the 16-byte identifier a sending client chooses for a message; receivers drop duplicates by it.
type MessageID [MessageIDSize]byte

// Limits tells a client the gateway's limits (sent in Hello).
type Limits struct {
	MaxFrameBytes      int     `json:"max_frame_bytes"`
	MaxCiphertextBytes int     `json:"max_ciphertext_bytes"`
	MaxRecipients      int     `json:"max_recipients"`
	MaxInFlight        int     `json:"max_in_flight"`
	RequestsPerSecond  float64 `json:"requests_per_second"`
	RequestBurst       int     `json:"request_burst"`
	HandshakeTimeoutMS int64   `json:"handshake_timeout_ms"`
	IdleTimeoutMS      int64   `json:"idle_timeout_ms"`
}

// Hello is the body of the "hello" push that opens every connection.
type Hello struct {
	Nonce     []byte   `json:"nonce"`      // 32 random bytes, single use, bound to this connection
	Gateway   string   `json:"gateway"`    // the gateway's libp2p peer ID, text form (presence records name it)
	GatewayID []byte   `json:"gateway_id"` // the same peer ID in binary form: what auth and registration proofs bind
	Addrs     []string `json:"addrs"`      // the gateway's libp2p multiaddrs, for presence records
	Version   int      `json:"version"`    // the frame protocol version
	Limits    Limits   `json:"limits"`
	// TimeMS is the gateway's clock when it sent the hello, in unix milliseconds: every proof a client signs is
	// checked against the grid's time, so a client whose own clock is off corrects by it (docs/PROTOCOL.md §7
	// Handshake). Zero from a gateway that predates the field.
	TimeMS int64 `json:"time_ms,omitempty"`
}

// AuthRequest is the body of the "auth" operation.
type AuthRequest struct {
	DeviceID  []byte `json:"device_id"` // 32 bytes
	Nonce     []byte `json:"nonce"`     // the nonce of this connection's hello
	Time      int64  `json:"time"`      // unix seconds, as signed in the proof
	Signature []byte `json:"signature"` // the e2ee connection-auth proof over (nonce, gateway, device, time)
	Presence  []byte `json:"presence"`  // a signed online presence record for this gateway (PROTOCOL.md §5)
	Offline   []byte `json:"offline"`   // the signed offline record the gateway publishes when the device leaves
}

// AuthResponse answers a successful "auth".
type AuthResponse struct {
	DeviceID  []byte `json:"device_id"`
	AccountID []byte `json:"account_id"`
}

// PresenceUpdate is the body of the "presence" operation: fresh records replacing the ones given at auth.
type PresenceUpdate struct {
	Presence []byte `json:"presence"`
	Offline  []byte `json:"offline"`
}

// SendRequest is the body of the "send" operation.
type SendRequest struct {
	MessageID  []byte   `json:"message_id"` // 16 bytes chosen by the client
	Ciphertext []byte   `json:"ciphertext"` // opaque to the grid
	Recipients [][]byte `json:"recipients"` // device IDs, 32 bytes each, no duplicates
}

// Delivery statuses reported per recipient in a SendResponse.
const (
	StatusDelivered = "delivered" // the recipient device's client acknowledged the envelope
	StatusStored    = "stored"    // the envelope is in the device's mailbox
	StatusOffline   = "offline"   // the device is not connected and no mailbox service is available
	StatusFailed    = "failed"    // see the result's code and reason
)

// RecipientResult is one recipient's outcome of a send.
type RecipientResult struct {
	DeviceID []byte `json:"device_id"`
	Status   string `json:"status"`
	Code     Code   `json:"code,omitempty"`   // with StatusFailed
	Reason   string `json:"reason,omitempty"` // with StatusFailed: a stable snake_case failure name
	// Receipts, with StatusStored, are the mailbox replicas' signed receipts for the envelope (at least the write
	// quorum, from distinct replicas; docs/PROTOCOL.md §5 Mailboxes). Clients check them with
	// relay/mailbox/receipt.VerifyReceipts before they believe "stored".
	Receipts [][]byte `json:"receipts,omitempty"`
}

// Failure reasons of a RecipientResult with StatusFailed (code in parentheses).
const (
	FailAckTimeout  = "ack_timeout"  // the device was pushed the envelope but did not acknowledge it in time (12)
	FailGone        = "gone"         // the device disconnected before acknowledging (12)
	FailUnreachable = "unreachable"  // the device's gateway could not be reached (12)
	FailBusy        = "busy"         // the device's gateway refused for lack of capacity (16)
	FailInternal    = "internal"     // the gateway failed (13)
	FailProtocol    = "protocol"     // the device's gateway answered outside the protocol (13)
	FailCancelled   = "cancelled"    // the sender's connection went away first (12)
	FailNoPresence  = "bad_presence" // the device's presence record could not be used (12)
	FailSenderQuota = "sender_quota" // the recipient's mailbox holds as many envelopes from this sender as allowed (17)
	FailMailboxFull = "mailbox_full" // the recipient's mailbox is full (17)
	FailTooLarge    = "too_large"    // the envelope exceeds the mailbox's size limit (8)
	FailRevoked     = "revoked"      // the recipient device is revoked; its mailbox is gone (11)
	FailNotStored   = "not_stored"   // too few mailbox replicas stored the envelope; nothing is promised (12)
)

// Outcome is the result of delivering one envelope to one device, as the recipient's gateway reports it.
type Outcome struct {
	Status string // StatusDelivered, StatusStored, StatusOffline or StatusFailed
	Code   Code   // with StatusFailed
	Reason string // with StatusFailed: one of the Fail* names
}

// Failed returns a failed Outcome.
func Failed(code Code, reason string) Outcome {
	return Outcome{Status: StatusFailed, Code: code, Reason: reason}
}

// SendResponse answers a "send", one result per recipient in request order.
type SendResponse struct {
	Results []RecipientResult `json:"results"`
}

// EnvelopePush is the body of the "envelope" push to a recipient device.
type EnvelopePush struct {
	MessageID    []byte `json:"message_id"`
	SenderDevice []byte `json:"sender_device"`
	Ciphertext   []byte `json:"ciphertext"`
}

// Ack is the body of the "ack" operation: the client has the envelope and the grid may forget it. It names one
// envelope by MessageID and SenderDevice, or, instead, up to MaxAcks envelopes in Acks (one frame for a batch).
type Ack struct {
	MessageID    []byte     `json:"message_id,omitempty"`
	SenderDevice []byte     `json:"sender_device,omitempty"`
	Acks         []AckEntry `json:"acks,omitempty"`
}

// AckEntry names one acknowledged envelope in a batched Ack.
type AckEntry struct {
	MessageID    []byte `json:"message_id"`
	SenderDevice []byte `json:"sender_device"`
}

// MaxAcks is the most envelopes one batched "ack" may acknowledge.
const MaxAcks = 1024

// Entries validates an Ack and returns the envelopes it acknowledges, as (sender, message) pairs: exactly one of
// the single form and a non-empty Acks of at most MaxAcks entries.
func (a *Ack) Entries() ([]DeviceID, []MessageID, error) {
	single := a.MessageID != nil || a.SenderDevice != nil
	switch {
	case single && len(a.Acks) > 0:
		return nil, nil, Errorf(CodeBadRequest, "ack has both message_id and acks")
	case len(a.Acks) > MaxAcks:
		return nil, nil, Errorf(CodeTooLarge, "%d acks exceed %d", len(a.Acks), MaxAcks)
	case !single && len(a.Acks) == 0:
		return nil, nil, Errorf(CodeBadRequest, "ack names no envelope")
	}
	list := a.Acks
	if single {
		list = []AckEntry{{MessageID: a.MessageID, SenderDevice: a.SenderDevice}}
	}
	senders, msgs := make([]DeviceID, len(list)), make([]MessageID, len(list))
	for i, e := range list {
		var err error
		if msgs[i], err = ParseMessageID(e.MessageID); err != nil {
			return nil, nil, fmt.Errorf("ack %d: %w", i, err)
		}
		if senders[i], err = ParseDeviceID(e.SenderDevice); err != nil {
			return nil, nil, fmt.Errorf("ack %d: %w", i, err)
		}
	}
	return senders, msgs, nil
}

// Envelope is one message on its way to one device, as nodes pass it between them.
type Envelope struct {
	MessageID  MessageID
	Sender     DeviceID
	Recipient  DeviceID
	Ciphertext []byte
}

// ParseDeviceID converts a 32-byte slice to a DeviceID.
func ParseDeviceID(b []byte) (DeviceID, error) {
	var d DeviceID
	if len(b) != DeviceIDSize {
		return d, Errorf(CodeBadRequest, "device id has %d bytes, want %d", len(b), DeviceIDSize)
	}
	copy(d[:], b)
	return d, nil
}

// ParseMessageID converts a 16-byte slice to a MessageID.
func ParseMessageID(b []byte) (MessageID, error) {
	var m MessageID
	if len(b) != MessageIDSize {
		return m, Errorf(CodeBadRequest, "message id has %d bytes, want %d", len(b), MessageIDSize)
	}
	copy(m[:], b)
	return m, nil
}

// Validate checks a SendRequest against size limits and returns its parsed IDs.
func (r *SendRequest) Validate(maxCiphertext, maxRecipients int) (MessageID, []DeviceID, error) {
	id, err := ParseMessageID(r.MessageID)
	if err != nil {
		return id, nil, err
	}
	if len(r.Ciphertext) == 0 {
		return id, nil, Errorf(CodeBadRequest, "empty ciphertext")
	}
	if len(r.Ciphertext) > maxCiphertext {
		return id, nil, Errorf(CodeTooLarge, "ciphertext of %d bytes exceeds %d", len(r.Ciphertext), maxCiphertext)
	}
	if len(r.Recipients) == 0 {
		return id, nil, Errorf(CodeBadRequest, "no recipients")
	}
	if len(r.Recipients) > maxRecipients {
		return id, nil, Errorf(CodeTooLarge, "%d recipients exceed %d", len(r.Recipients), maxRecipients)
	}
	out := make([]DeviceID, len(r.Recipients))
	seen := make(map[DeviceID]struct{}, len(r.Recipients))
	for i, b := range r.Recipients {
		d, err := ParseDeviceID(b)
		if err != nil {
			return id, nil, fmt.Errorf("recipient %d: %w", i, err)
		}
		if _, dup := seen[d]; dup {
			return id, nil, Errorf(CodeBadRequest, "recipient %d repeated", i)
		}
		seen[d] = struct{}{}
		out[i] = d
	}
	return id, out, nil
}
