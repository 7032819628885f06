package client

import (
	"sync"
	"time"

	"github.com/iagon/gridchat/e2ee"
)

// ConversationKind says what a conversation is.
type ConversationKind uint8

// Conversation kinds.
const (
	// Direct is a 1:1 conversation between two accounts.
	Direct ConversationKind = 1
	// Group is a group conversation with an admin-signed member list.
	Group ConversationKind = 2
	// Self is the conversation among one account's own devices (history transfer, sync).
	Self ConversationKind = 3
)

// String names the kind.
func (k ConversationKind) String() string {
	switch k {
	case Direct:
		return "direct"
	case Group:
		return "group"
	case Self:
		return "self"
	}
	return "unknown"
}

// Conversation is a conversation as the client knows it.
type Conversation struct {
	ID   e2ee.ConversationID
	Kind ConversationKind
	// Peer is the other account of a Direct conversation.
	Peer e2ee.AccountID
	// Group is the current group-state record of a Group conversation.
	Group *GroupState
}

// Attachment is a small file sent in a conversation, encrypted like any message.
type Attachment struct {
	Name string
	MIME string
	Data []byte
}

// Message is one message of a conversation's history.
type Message struct {
	Conversation e2ee.ConversationID
	Sender       e2ee.AccountID
	SenderDevice e2ee.DeviceID
	// Seq is the sender device's number for this message in this conversation (1, 2, ...).
	Seq      uint64
	Sent     time.Time // the sender's clock, corrected to the grid's
	Received time.Time // this device's clock, corrected to the grid's (equal to Sent for outgoing messages)
	Type     PayloadType
	Text     string
	// Attachment is set for PayloadAttachment.
	Attachment *Attachment
	// Group is the new group state for PayloadGroupState.
	Group *GroupState
	// Outgoing is true for messages this account sent (from this device or another of its devices).
	Outgoing bool
	// Clock is the message's causal counter (docs/PROTOCOL.md §9.3), 0 for a message from a client that
	// predates counters. CompareMessages orders messages by it.
	Clock uint64
	// Unsupported is set for a numbered message of a type this client does not know (Type holds its wire
	// code), sent by a newer client: only Type, the sender, the times, Seq and Clock are set. The application
	// should tell the user that a message arrived that this version cannot show. It is kept in the history and
	// counts as received (no gap, no resend). An unnumbered payload of an unknown type is a signal, not
	// content, and is ignored (docs/PROTOCOL.md §9.3 "Extensions").
	Unsupported bool
}

// Event is something the application learns about as it happens: one of *MessageEvent, *DeliveryEvent,
// *GapEvent, *SafetyNumberEvent, *ConnectionEvent, *HistoryEvent.
type Event interface{ event() }

// MessageEvent reports a new message in a conversation (received, or sent by another device of this account).
// Each message is reported once, even when the grid delivers it again after a reconnect.
type MessageEvent struct{ Message Message }

// DeliveryStatus is what the grid reported for one recipient device of a send.
type DeliveryStatus struct {
	Device e2ee.DeviceID
	Status string // wire.StatusDelivered, wire.StatusStored, wire.StatusOffline or wire.StatusFailed
	Reason string // the failure reason with wire.StatusFailed
	// Receipts is the number of verified replica receipts behind a "stored" status.
	Receipts int
}

// DeliveryEvent reports the per-device outcome of a message this device sent.
type DeliveryEvent struct {
	Conversation e2ee.ConversationID
	Seq          uint64
	Statuses     []DeliveryStatus
}

// GapReason says why messages are missing.
type GapReason string

// Gap reasons.
const (
	// GapMissing: the sender's numbering skipped messages this device never received; a resend was requested.
	GapMissing GapReason = "missing"
	// GapExpired: the grid expired envelopes before this device fetched them (TTL).
	GapExpired GapReason = "expired"
	// GapEvicted: the grid dropped envelopes because the device's mailbox was full.
	GapEvicted GapReason = "evicted"
	// GapUndecryptable: a message arrived whose session key this device has not received; a resend was
	// requested.
	GapUndecryptable GapReason = "undecryptable"
)

// GapEvent reports messages that could not be delivered to this device. For GapMissing, Seqs lists the
// missing numbers of SenderDevice in Conversation; for expiry, Conversation is unknown (the grid cannot see
// it) and Count says how many envelopes of SenderDevice were lost.
type GapEvent struct {
	Conversation e2ee.ConversationID
	SenderDevice e2ee.DeviceID
	Reason       GapReason
	Count        int
	Seqs         []uint64
}

// SafetyNumberEvent reports that the safety number of a conversation changed because a member's device set
// changed (a device linked or revoked). The user should compare the new number again.
type SafetyNumberEvent struct {
	Conversation e2ee.ConversationID
	Account      e2ee.AccountID
	Old, New     string
}

// ConnectionEvent reports that the client connected to (Err == nil) or lost (Err != nil) a gateway.
type ConnectionEvent struct {
	Gateway string
	Err     error
}

// HistoryEvent reports that a history transfer from another device of this account was imported.
type HistoryEvent struct {
	From     e2ee.DeviceID
	Messages int
}

func (*MessageEvent) event()      {}
func (*DeliveryEvent) event()     {}
func (*GapEvent) event()          {}
func (*SafetyNumberEvent) event() {}
func (*ConnectionEvent) event()   {}
func (*HistoryEvent) event()      {}

// maxQueuedEvents caps events waiting for the application; past it the oldest are dropped (the history in the
// store stays complete).
const maxQueuedEvents = 1 << 16

// eventQueue hands events to the application in order without ever blocking the client: a bounded queue and
// one goroutine (owned by Client) that feeds the channel.
type eventQueue struct {
	mu      sync.Mutex
	q       []Event
	dropped int
	ready   chan struct{}
}

func newEventQueue() *eventQueue { return &eventQueue{ready: make(chan struct{}, 1)} }

func (e *eventQueue) push(ev Event) {
	e.mu.Lock()
	if len(e.q) >= maxQueuedEvents {
		e.q = e.q[1:]
		e.dropped++
	}
	e.q = append(e.q, ev)
	e.mu.Unlock()
	select {
	case e.ready <- struct{}{}:
	default:
	}
}

func (e *eventQueue) take() []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	q := e.q
	e.q = nil
	return q
}

// pump feeds out until done is closed.
func (e *eventQueue) pump(out chan<- Event, done <-chan struct{}) {
	defer close(out)
	for {
		for _, ev := range e.take() {
			select {
			case out <- ev:
			case <-done:
				return
			}
		}
		select {
		case <-e.ready:
		case <-done:
			return
		}
	}
}
