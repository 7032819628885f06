package e2ee

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/iagon/gridchat/e2ee/internal/frame"
	"github.com/iagon/gridchat/e2ee/internal/kdfchain"
)

// ConversationID identifies a conversation (1:1 or group): 32 bytes, shown as lowercase hex.
type ConversationID [32]byte

// String returns the ID as lowercase hex.
func (id ConversationID) String() string { return hex.EncodeToString(id[:]) }

// ParseConversationID parses 64 hex digits.
func ParseConversationID(s string) (ConversationID, error) {
	var id ConversationID
	if err := parseHex32(s, id[:]); err != nil {
		return id, fmt.Errorf("e2ee: parse conversation ID: %w", err)
	}
	return id, nil
}

// NewConversationID returns a random conversation ID.
func NewConversationID() (ConversationID, error) {
	var id ConversationID
	if _, err := io.ReadFull(rand.Reader, id[:]); err != nil {
		return id, fmt.Errorf("e2ee: new conversation ID: %w", err)
	}
	return id, nil
}

// Session is one epoch of a conversation. It starts with a random 32-byte session key (NewSession); once the
// key has been distributed (Distribute) or received (Open), the session keeps only one chain key per member
// device, derived from the session key, and erases the session key itself. Each member device's chain is
// claimed once: by that device to send (Sender) or by a receiver of its messages (Receiver); claiming erases it
// from the session. That is what makes earlier messages of the epoch unreadable from a later device state.
type Session struct {
	conv   ConversationID
	epoch  uint64
	root   []byte                 // the session key until distributed or received
	chains map[DeviceID]*[32]byte // unclaimed chain start keys of member devices
	member []DeviceID             // every member device of the epoch, sorted
}

// NewSession starts epoch epoch of conversation conv with a fresh random session key.
func NewSession(conv ConversationID, epoch uint64) (*Session, error) {
	return newSession(rand.Reader, conv, epoch)
}

func newSession(rnd io.Reader, conv ConversationID, epoch uint64) (*Session, error) {
	s := &Session{conv: conv, epoch: epoch, root: make([]byte, 32)}
	if _, err := io.ReadFull(rnd, s.root); err != nil {
		return nil, fmt.Errorf("e2ee: new session: %w", err)
	}
	return s, nil
}

// Conversation returns the session's conversation ID.
func (s *Session) Conversation() ConversationID { return s.conv }

// Epoch returns the session's epoch.
func (s *Session) Epoch() uint64 { return s.epoch }

// Members returns every member device of the epoch (sender and recipients of its key distribution), sorted.
// It is empty before the session is distributed.
func (s *Session) Members() []DeviceID { return slices.Clone(s.member) }

// chainContext is the HKDF info suffix of a device's first chain key.
func chainContext(conv ConversationID, epoch uint64, dev DeviceID) []byte {
	var e [8]byte
	putU64(e[:], epoch)
	return frame.Join(labelChainContext, suiteV1().bytes(), conv[:], e[:], dev[:])
}

// finish derives every member's chain key from the session key and erases the session key.
func (s *Session) finish(members []DeviceID) error {
	s.chains = make(map[DeviceID]*[32]byte, len(members))
	for _, d := range members {
		ck, err := kdfchain.Start(s.root, chainContext(s.conv, s.epoch, d))
		if err != nil {
			return err
		}
		s.chains[d] = &ck
	}
	s.member = slices.Clone(members)
	slices.SortFunc(s.member, func(a, b DeviceID) int { return compareIDs(a[:], b[:]) })
	frame.Zero(s.root)
	s.root = nil
	return nil
}

// claim removes and returns dev's chain key.
func (s *Session) claim(op string, dev DeviceID) ([32]byte, error) {
	ck, ok := s.chains[dev]
	if !ok {
		return [32]byte{}, errorf(op, ErrSessionUsed, "device %s in conversation %s epoch %d", dev, s.conv, s.epoch)
	}
	out := *ck
	frame.Zero(ck[:])
	delete(s.chains, dev)
	return out, nil
}

// Sender claims this device's chain and returns the state that seals its messages in this epoch.
func (s *Session) Sender(me *DeviceKeys) (*Sender, error) {
	ck, err := s.claim("session sender", me.ID())
	if err != nil {
		return nil, err
	}
	return &Sender{conv: s.conv, epoch: s.epoch, dev: me, ck: ck}, nil
}

// Receiver claims sender's chain and returns the state that opens its messages in this epoch. sender is the
// device's public keys from its account's replayed chain (AccountState.SenderKey), so revoked and unknown
// devices never get here.
func (s *Session) Receiver(sender DevicePublic, opts ReceiverOptions) (*Receiver, error) {
	ck, err := s.claim("session receiver", sender.ID())
	if err != nil {
		return nil, err
	}
	return newReceiver(s.conv, s.epoch, sender, ck, opts), nil
}

// Encode returns the session's state (secret: store it sealed). A session whose key has not been distributed
// yet cannot be encoded.
func (s *Session) Encode() ([]byte, error) {
	if s.root != nil {
		return nil, errorf("encode session", ErrSessionUsed, "session key not distributed yet")
	}
	b := frame.NewBuilder(64 + len(s.member)*64)
	putHeader(b, tagSession)
	b.Raw(s.conv[:])
	b.U64(s.epoch)
	b.U32(uint32(len(s.member)))
	for _, d := range s.member {
		b.Raw(d[:])
	}
	keys := slices.SortedFunc(maps.Keys(s.chains), func(a, b DeviceID) int { return compareIDs(a[:], b[:]) })
	b.U32(uint32(len(keys)))
	for _, d := range keys {
		b.Raw(d[:])
		b.Raw(s.chains[d][:])
	}
	return b.Bytes()
}

// DecodeSession decodes a session state made by Encode.
func DecodeSession(data []byte) (*Session, error) {
	const op = "decode session"
	r := frame.NewReader(data)
	if err := readHeader(r, tagSession, op); err != nil {
		return nil, err
	}
	s := &Session{chains: map[DeviceID]*[32]byte{}}
	r.Fixed(s.conv[:])
	s.epoch = r.U64()
	n := r.U32()
	if !r.OK() || n == 0 || n > MaxRecipients+1 {
		return nil, malformed(op)
	}
	for i := 0; i < int(n); i++ {
		var d DeviceID
		r.Fixed(d[:])
		if !r.OK() || (i > 0 && compareIDs(s.member[i-1][:], d[:]) >= 0) {
			return nil, malformed(op)
		}
		s.member = append(s.member, d)
	}
	k := r.U32()
	if !r.OK() || k > n {
		return nil, malformed(op)
	}
	var prev *DeviceID
	for i := 0; i < int(k); i++ {
		var d DeviceID
		ck := new([32]byte)
		r.Fixed(d[:])
		r.Fixed(ck[:])
		if !r.OK() || (prev != nil && compareIDs(prev[:], d[:]) >= 0) || !slices.Contains(s.member, d) {
			return nil, malformed(op)
		}
		s.chains[d] = ck
		prev = &d
	}
	if !r.Done() {
		return nil, malformed(op)
	}
	return s, nil
}

// RenewalPolicy says when a conversation needs a new session (a new epoch with a fresh key distribution).
type RenewalPolicy struct {
	MaxMessages uint64        // messages sent by this device in the epoch; 0 means no limit
	MaxAge      time.Duration // age of the session; 0 means no limit
}

// DefaultRenewalPolicy renews after 100 messages or 7 days, and always on a membership change.
func DefaultRenewalPolicy() RenewalPolicy {
	return RenewalPolicy{MaxMessages: 100, MaxAge: 7 * 24 * time.Hour}
}

// RenewalReason says why a session is due for renewal.
type RenewalReason uint8

// Renewal reasons.
const (
	RenewNotDue     RenewalReason = 0
	RenewCount      RenewalReason = 1
	RenewAge        RenewalReason = 2
	RenewMembership RenewalReason = 3
)

// SessionUsage is what the policy looks at: when the session started, how many messages this device sealed
// in it, and its member devices.
type SessionUsage struct {
	Started  time.Time
	Messages uint64
	Members  []DeviceID
}

// Due reports whether a new session is needed at now, given the conversation's current member devices
// (computed from the members' replayed sigchains): any device added or removed forces one.
func (p RenewalPolicy) Due(u SessionUsage, current []DeviceID, now time.Time) RenewalReason {
	a := slices.Clone(u.Members)
	b := slices.Clone(current)
	cmp := func(x, y DeviceID) int { return compareIDs(x[:], y[:]) }
	slices.SortFunc(a, cmp)
	slices.SortFunc(b, cmp)
	switch {
	case !slices.Equal(slices.Compact(a), slices.Compact(b)):
		return RenewMembership
	case p.MaxMessages > 0 && u.Messages >= p.MaxMessages:
		return RenewCount
	case p.MaxAge > 0 && !now.Before(u.Started.Add(p.MaxAge)):
		return RenewAge
	}
	return RenewNotDue
}

func compareIDs(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			if a[i] < b[i] {
				return -1
			}
			return 1
		}
	}
	return 0
}

func putU64(b []byte, v uint64) {
	for i := 7; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
}
