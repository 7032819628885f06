package e2ee

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"

	"github.com/iagon/gridchat/e2ee/internal/frame"
	"github.com/iagon/gridchat/e2ee/internal/kdfchain"
	"golang.org/x/crypto/chacha20poly1305"
)

// Message limits.
const (
	MaxPayloadSize     = 1 << 20
	maxMessageOverhead = headerSize + suiteSize + 32 + 8 + 32 + 8 + 4 + 16 + signatureSize
	// DefaultMaxSkip is the default number of skipped message keys a Receiver keeps.
	DefaultMaxSkip = 1000
)

// Message is one encrypted, signed message of a sender device in a session. The ciphertext is
// ChaCha20-Poly1305 under the message key of Counter, with associated data binding suite, conversation, epoch,
// sender and counter; the whole message is signed by the sender device (context CtxMessage).
type Message struct {
	Conversation ConversationID
	Epoch        uint64
	Sender       DeviceID
	Counter      uint64
	Ciphertext   []byte
	Sig          []byte
}

func messageAD(conv ConversationID, epoch uint64, sender DeviceID, counter uint64) []byte {
	// J(label, suite, conv, epoch, sender, counter), written without a builder: it is on the hot path.
	ad := make([]byte, 0, 6*4+len(labelMessageAD)+suiteSize+32+8+32+8)
	field := func(p []byte) []byte {
		ad = binary.BigEndian.AppendUint32(ad, uint32(len(p)))
		return append(ad, p...)
	}
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(labelMessageAD)))
	ad = append(ad, labelMessageAD...)
	var suite [suiteSize]byte
	s := suiteV1()
	suite[0] = s.Version
	binary.BigEndian.PutUint16(suite[1:], s.Sig)
	binary.BigEndian.PutUint16(suite[3:], s.KEM)
	binary.BigEndian.PutUint16(suite[5:], s.KDF)
	binary.BigEndian.PutUint16(suite[7:], s.AEAD)
	ad = field(suite[:])
	ad = field(conv[:])
	var e, c [8]byte
	binary.BigEndian.PutUint64(e[:], epoch)
	binary.BigEndian.PutUint64(c[:], counter)
	ad = field(e[:])
	ad = field(sender[:])
	ad = field(c[:])
	return ad
}

func (m *Message) transcript() ([]byte, error) {
	b := frame.NewBuilder(maxMessageOverhead + len(m.Ciphertext))
	putHeader(b, tagMessage)
	b.Raw(m.Conversation[:])
	b.U64(m.Epoch)
	b.Raw(m.Sender[:])
	b.U64(m.Counter)
	b.Var(m.Ciphertext)
	return b.Bytes()
}

// Encode returns the message's encoding (transcript then signature).
func (m *Message) Encode() []byte {
	tr, _ := m.transcript()
	return append(tr, m.Sig...)
}

// DecodeMessage decodes strictly (without verifying or decrypting).
func DecodeMessage(data []byte) (*Message, error) {
	const op = "decode message"
	if len(data) > maxMessageOverhead+MaxPayloadSize {
		return nil, errorf(op, ErrMalformed, "%d bytes over cap", len(data))
	}
	r := frame.NewReader(data)
	if err := readHeader(r, tagMessage, op); err != nil {
		return nil, err
	}
	m := &Message{}
	r.Fixed(m.Conversation[:])
	m.Epoch = r.U64()
	r.Fixed(m.Sender[:])
	m.Counter = r.U64()
	m.Ciphertext = r.Var(MaxPayloadSize + chacha20poly1305.Overhead)
	m.Sig = r.Raw(signatureSize)
	if !r.Done() || len(m.Ciphertext) < chacha20poly1305.Overhead {
		return nil, malformed(op)
	}
	return m, nil
}

// Sender seals this device's messages in one session. It is not safe for concurrent use.
type Sender struct {
	conv  ConversationID
	epoch uint64
	dev   *DeviceKeys
	ck    [32]byte
	next  uint64
}

// Counter returns the number of messages sealed so far (the counter of the next message).
func (s *Sender) Counter() uint64 { return s.next }

// Seal encrypts payload (opaque bytes, at most MaxPayloadSize) as the next message, advances the chain and
// erases the message key.
func (s *Sender) Seal(payload []byte) (*Message, error) {
	const op = "seal message"
	if len(payload) > MaxPayloadSize {
		return nil, errorf(op, ErrMalformed, "payload of %d bytes over cap", len(payload))
	}
	next, key, nonce, err := kdfchain.Step(&s.ck, s.next)
	if err != nil {
		return nil, fmt.Errorf("e2ee: %s: %w", op, err)
	}
	defer frame.Zero(key[:])
	aead, err := chacha20poly1305.New(key[:])
	if err != nil {
		return nil, fmt.Errorf("e2ee: %s: %w", op, err)
	}
	m := &Message{Conversation: s.conv, Epoch: s.epoch, Sender: s.dev.ID(), Counter: s.next}
	m.Ciphertext = aead.Seal(make([]byte, 0, len(payload)+aead.Overhead()), nonce[:], payload, messageAD(m.Conversation, m.Epoch, m.Sender, m.Counter))
	tr, err := m.transcript()
	if err != nil {
		return nil, fmt.Errorf("e2ee: %s: %w", op, err)
	}
	m.Sig = s.dev.sign(CtxMessage, tr)
	s.ck = next
	frame.Zero(next[:])
	s.next++
	return m, nil
}

// Encode returns the sender's state (secret: store it sealed); DecodeSender restores it with the device keys.
func (s *Sender) Encode() []byte {
	b := frame.NewBuilder(128)
	putHeader(b, tagSender)
	b.Raw(s.conv[:])
	b.U64(s.epoch)
	id := s.dev.ID()
	b.Raw(id[:])
	b.Raw(s.ck[:])
	b.U64(s.next)
	out, _ := b.Bytes()
	return out
}

// DecodeSender restores a sender state made by Encode for device dev.
func DecodeSender(data []byte, dev *DeviceKeys) (*Sender, error) {
	const op = "decode sender"
	r := frame.NewReader(data)
	if err := readHeader(r, tagSender, op); err != nil {
		return nil, err
	}
	s := &Sender{dev: dev}
	r.Fixed(s.conv[:])
	s.epoch = r.U64()
	var id DeviceID
	r.Fixed(id[:])
	r.Fixed(s.ck[:])
	s.next = r.U64()
	if !r.Done() {
		return nil, malformed(op)
	}
	if id != dev.ID() {
		return nil, errorf(op, ErrUnknownSender, "state of %s restored for %s", id, dev.ID())
	}
	return s, nil
}

// ReceiverOptions configures a Receiver.
type ReceiverOptions struct {
	// MaxSkip bounds the message keys kept for skipped (missing or out-of-order) messages and how far ahead a
	// message may jump. 0 means DefaultMaxSkip; values above MaxSkipLimit are lowered to it.
	MaxSkip int
}

type skippedKey struct {
	key   [32]byte
	nonce [12]byte
}

// Receiver opens one sender device's messages in one session. It handles messages out of order and missing
// messages within a window of MaxSkip keys, refuses replays and messages beyond the window, and keeps no key
// for a message it has opened. It is not safe for concurrent use.
type Receiver struct {
	conv    ConversationID
	epoch   uint64
	sender  DevicePublic
	id      DeviceID
	ck      [32]byte
	next    uint64
	floor   uint64 // keys of counters below floor that are not in skipped were evicted
	maxSkip int
	skipped map[uint64]*skippedKey
}

func newReceiver(conv ConversationID, epoch uint64, sender DevicePublic, ck [32]byte, opts ReceiverOptions) *Receiver {
	if opts.MaxSkip <= 0 {
		opts.MaxSkip = DefaultMaxSkip
	}
	opts.MaxSkip = min(opts.MaxSkip, MaxSkipLimit)
	return &Receiver{conv: conv, epoch: epoch, sender: sender, id: sender.ID(), ck: ck, maxSkip: opts.MaxSkip, skipped: map[uint64]*skippedKey{}}
}

// Open verifies m's signature against the sender's key, then decrypts it. A failed Open changes nothing.
func (r *Receiver) Open(m *Message) ([]byte, error) {
	const op = "open message"
	if m.Conversation != r.conv || m.Epoch != r.epoch {
		return nil, errorf(op, ErrWrongConversation, "message for %s epoch %d, receiver for %s epoch %d", m.Conversation, m.Epoch, r.conv, r.epoch)
	}
	if m.Sender != r.id {
		return nil, errorf(op, ErrUnknownSender, "message from %s, receiver for %s", m.Sender, r.id)
	}
	tr, err := m.transcript()
	if err != nil || !verifySig(r.sender.Signing, CtxMessage, tr, m.Sig) {
		return nil, errorf(op, ErrBadSignature, "sender %s counter %d", m.Sender, m.Counter)
	}
	ad := messageAD(m.Conversation, m.Epoch, m.Sender, m.Counter)
	if m.Counter < r.next {
		sk, ok := r.skipped[m.Counter]
		if !ok {
			if m.Counter < r.floor {
				return nil, errorf(op, ErrTooOld, "counter %d evicted from the window", m.Counter)
			}
			return nil, errorf(op, ErrReplay, "counter %d already opened", m.Counter)
		}
		pt, err := openWith(sk.key[:], sk.nonce[:], m.Ciphertext, ad)
		if err != nil {
			return nil, fmt.Errorf("e2ee: %s: %w", op, ErrDecrypt)
		}
		frame.Zero(sk.key[:])
		delete(r.skipped, m.Counter)
		return pt, nil
	}
	if m.Counter-r.next > uint64(r.maxSkip) {
		return nil, errorf(op, ErrWindow, "counter %d, expecting %d, window %d", m.Counter, r.next, r.maxSkip)
	}
	// Derive the keys up to m.Counter on the side; commit only if the message opens.
	ck := r.ck
	var pending []uint64
	var pendingKeys []*skippedKey
	defer func() {
		frame.Zero(ck[:])
		for _, k := range pendingKeys {
			if k != nil {
				frame.Zero(k.key[:])
			}
		}
	}()
	var key [32]byte
	var nonce [12]byte
	for c := r.next; ; c++ {
		next, k, n, err := kdfchain.Step(&ck, c)
		if err != nil {
			return nil, fmt.Errorf("e2ee: %s: %w", op, err)
		}
		ck = next
		if c == m.Counter {
			key, nonce = k, n
			break
		}
		pending = append(pending, c)
		pendingKeys = append(pendingKeys, &skippedKey{key: k, nonce: n})
	}
	pt, err := openWith(key[:], nonce[:], m.Ciphertext, ad)
	frame.Zero(key[:])
	if err != nil {
		return nil, fmt.Errorf("e2ee: %s: %w", op, ErrDecrypt)
	}
	r.ck = ck
	r.next = m.Counter + 1
	for i, c := range pending {
		r.skipped[c] = pendingKeys[i]
		pendingKeys[i] = nil
	}
	r.evict()
	return pt, nil
}

// evict drops the oldest skipped keys beyond the window.
func (r *Receiver) evict() {
	if len(r.skipped) <= r.maxSkip {
		return
	}
	counters := slices.Sorted(maps.Keys(r.skipped))
	for _, c := range counters[:len(counters)-r.maxSkip] {
		frame.Zero(r.skipped[c].key[:])
		delete(r.skipped, c)
		r.floor = c + 1
	}
}

func openWith(key, nonce, ct, ad []byte) ([]byte, error) {
	aead, err := chacha20poly1305.New(key)
	if err != nil {
		return nil, err
	}
	return aead.Open(nil, nonce, ct, ad)
}

// Skipped returns how many skipped message keys the receiver holds.
func (r *Receiver) Skipped() int { return len(r.skipped) }

// Encode returns the receiver's state (secret: store it sealed).
func (r *Receiver) Encode() []byte {
	b := frame.NewBuilder(2048 + len(r.skipped)*52)
	putHeader(b, tagReceiver)
	b.Raw(r.conv[:])
	b.U64(r.epoch)
	b.Var(r.sender.Encode())
	b.Raw(r.ck[:])
	b.U64(r.next)
	b.U64(r.floor)
	b.U32(uint32(r.maxSkip))
	counters := slices.Sorted(maps.Keys(r.skipped))
	b.U32(uint32(len(counters)))
	for _, c := range counters {
		b.U64(c)
		b.Raw(r.skipped[c].key[:])
		b.Raw(r.skipped[c].nonce[:])
	}
	out, _ := b.Bytes()
	return out
}

// MaxSkipLimit caps ReceiverOptions.MaxSkip in decoded state.
const MaxSkipLimit = 100000

// DecodeReceiver restores a receiver state made by Encode.
func DecodeReceiver(data []byte) (*Receiver, error) {
	const op = "decode receiver"
	rd := frame.NewReader(data)
	if err := readHeader(rd, tagReceiver, op); err != nil {
		return nil, err
	}
	r := &Receiver{skipped: map[uint64]*skippedKey{}}
	rd.Fixed(r.conv[:])
	r.epoch = rd.U64()
	sp := rd.Var(maxDevicePublic)
	rd.Fixed(r.ck[:])
	r.next, r.floor = rd.U64(), rd.U64()
	r.maxSkip = int(rd.U32())
	n := rd.U32()
	if !rd.OK() || r.maxSkip < 1 || r.maxSkip > MaxSkipLimit || int(n) > r.maxSkip || r.floor > r.next {
		return nil, malformed(op)
	}
	var err error
	if r.sender, err = DecodeDevicePublic(sp); err != nil {
		return nil, fmt.Errorf("e2ee: %s: %w", op, err)
	}
	r.id = r.sender.ID()
	var prev uint64
	for i := 0; i < int(n); i++ {
		c := rd.U64()
		sk := &skippedKey{}
		rd.Fixed(sk.key[:])
		rd.Fixed(sk.nonce[:])
		if !rd.OK() || c >= r.next || c < r.floor || (i > 0 && c <= prev) {
			return nil, malformed(op)
		}
		r.skipped[c] = sk
		prev = c
	}
	if !rd.Done() {
		return nil, malformed(op)
	}
	return r, nil
}
