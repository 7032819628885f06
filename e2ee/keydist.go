package e2ee

import (
	"crypto/hpke"
	"fmt"
	"slices"

	"github.com/iagon/gridchat/e2ee/internal/frame"
)

// Key distribution limits.
const (
	MaxRecipients         = 1000
	keyDistCiphertextSize = 1120 + 32 + 16 // X-Wing encapsulation + sealed 32-byte key + tag
	maxKeyDistSize        = KeyDistOverhead + MaxRecipients*KeyDistEntrySize
)

// KeyDistribution carries a session key to every recipient device, each entry HPKE-sealed to that device's
// current signed messaging key; the whole message is signed by the sender device (context CtxKeyDist).
type KeyDistribution struct {
	Conversation ConversationID
	Epoch        uint64
	Sender       DeviceID
	Entries      []KeyEntry // sorted by recipient device ID, no duplicates
	Sig          []byte
}

// KeyEntry is one recipient device's sealed copy of the session key.
type KeyEntry struct {
	Recipient  DeviceID
	KeyID      [32]byte // ID of the recipient's messaging key that was used
	Ciphertext []byte   // HPKE encapsulated key || sealed session key
}

func keyDistInfo(conv ConversationID, epoch uint64, sender, recipient DeviceID, kid [32]byte) []byte {
	var e [8]byte
	putU64(e[:], epoch)
	return frame.Join(labelKeyDistInfo, suiteV1().bytes(), conv[:], e[:], sender[:], recipient[:], kid[:])
}

// Key distribution sizes, for callers that fit distributions into a transport's size limit.
const (
	// KeyDistEntrySize is the encoded size of one recipient's entry.
	KeyDistEntrySize = 32 + 32 + 4 + keyDistCiphertextSize
	// KeyDistOverhead is the encoded size of a key distribution besides its entries.
	KeyDistOverhead = headerSize + suiteSize + 32 + 8 + 32 + 4 + signatureSize
)

// Distribute seals session's key to every recipient (every current device of every member, including the
// sender's own other devices; the sender's own device is skipped) and signs the result. Afterwards the
// session keeps only the member devices' chain keys and the session key is erased, so Distribute works once
// per session. It is DistributeChunks with a single chunk.
func Distribute(sender *DeviceKeys, session *Session, recipients []RecipientKey) (*KeyDistribution, error) {
	kds, err := DistributeChunks(sender, session, recipients, MaxRecipients)
	if err != nil {
		return nil, err
	}
	return kds[0], nil
}

// DistributeChunks is Distribute for groups too large for one message: it seals session's key to every
// recipient as Distribute does, but returns the entries as several key distributions ("chunks") of at most
// perChunk entries each, every one signed on its own and opened with Open like any key distribution. The
// recipients (the sender's own device removed) are sorted by device ID and cut into ceil(n/perChunk)
// contiguous chunks whose sizes differ by at most one, so each recipient device needs only its own chunk.
// Every chunk carries the same session key: a receiver's chain for the sender is the same whichever chunk it
// opened. The session's member devices are all the recipients and the sender.
func DistributeChunks(sender *DeviceKeys, session *Session, recipients []RecipientKey, perChunk int) ([]*KeyDistribution, error) {
	const op = "distribute session key"
	if session.root == nil {
		return nil, errorf(op, ErrSessionUsed, "session key already distributed")
	}
	rs := slices.Clone(recipients)
	rs = slices.DeleteFunc(rs, func(r RecipientKey) bool { return r.Device == sender.ID() })
	slices.SortFunc(rs, func(a, b RecipientKey) int { return compareIDs(a.Device[:], b.Device[:]) })
	if len(rs) == 0 || len(rs) > MaxRecipients {
		return nil, errorf(op, ErrMalformed, "%d recipients", len(rs))
	}
	if perChunk < 1 {
		return nil, errorf(op, ErrMalformed, "%d entries per chunk", perChunk)
	}
	entries := make([]KeyEntry, len(rs))
	members := make([]DeviceID, 0, len(rs)+1)
	members = append(members, sender.ID())
	for i, r := range rs {
		if i > 0 && rs[i-1].Device == r.Device {
			return nil, errorf(op, ErrMalformed, "recipient %s listed twice", r.Device)
		}
		if r.key == nil {
			return nil, errorf(op, ErrMalformed, "recipient %s has no verified key (use NewRecipientKey)", r.Device)
		}
		ct, err := hpke.Seal(r.key, hpkeKDF(), hpkeAEAD(), keyDistInfo(session.conv, session.epoch, sender.ID(), r.Device, r.KeyID), session.root)
		if err != nil {
			return nil, fmt.Errorf("e2ee: %s: seal to %s: %w", op, r.Device, err)
		}
		entries[i] = KeyEntry{Recipient: r.Device, KeyID: r.KeyID, Ciphertext: ct}
		members = append(members, r.Device)
	}
	n := (len(entries) + perChunk - 1) / perChunk
	kds := make([]*KeyDistribution, 0, n)
	for i := range n {
		lo, hi := i*len(entries)/n, (i+1)*len(entries)/n
		kd := &KeyDistribution{Conversation: session.conv, Epoch: session.epoch, Sender: sender.ID(), Entries: entries[lo:hi:hi]}
		tr, err := kd.transcript()
		if err != nil {
			return nil, fmt.Errorf("e2ee: %s: %w", op, err)
		}
		kd.Sig = sender.sign(CtxKeyDist, tr)
		kds = append(kds, kd)
	}
	if err := session.finish(members); err != nil {
		return nil, fmt.Errorf("e2ee: %s: %w", op, err)
	}
	return kds, nil
}

func (kd *KeyDistribution) transcript() ([]byte, error) {
	b := frame.NewBuilder(128 + len(kd.Entries)*(68+keyDistCiphertextSize))
	putHeader(b, tagKeyDist)
	b.Raw(kd.Conversation[:])
	b.U64(kd.Epoch)
	b.Raw(kd.Sender[:])
	b.U32(uint32(len(kd.Entries)))
	for _, e := range kd.Entries {
		b.Raw(e.Recipient[:])
		b.Raw(e.KeyID[:])
		b.Var(e.Ciphertext)
	}
	return b.Bytes()
}

// Encode returns the key distribution's encoding (transcript then signature).
func (kd *KeyDistribution) Encode() []byte {
	tr, _ := kd.transcript()
	return append(tr, kd.Sig...)
}

// Recipients returns the recipient device IDs in order.
func (kd *KeyDistribution) Recipients() []DeviceID {
	out := make([]DeviceID, len(kd.Entries))
	for i, e := range kd.Entries {
		out[i] = e.Recipient
	}
	return out
}

// DecodeKeyDistribution decodes strictly (without verifying).
func DecodeKeyDistribution(data []byte) (*KeyDistribution, error) {
	const op = "decode key distribution"
	if len(data) > maxKeyDistSize {
		return nil, errorf(op, ErrMalformed, "%d bytes over cap", len(data))
	}
	r := frame.NewReader(data)
	if err := readHeader(r, tagKeyDist, op); err != nil {
		return nil, err
	}
	kd := &KeyDistribution{}
	r.Fixed(kd.Conversation[:])
	kd.Epoch = r.U64()
	r.Fixed(kd.Sender[:])
	n := r.U32()
	if !r.OK() || n == 0 || n > MaxRecipients {
		return nil, malformed(op)
	}
	kd.Entries = make([]KeyEntry, n)
	for i := range kd.Entries {
		e := &kd.Entries[i]
		r.Fixed(e.Recipient[:])
		r.Fixed(e.KeyID[:])
		e.Ciphertext = r.Var(keyDistCiphertextSize)
		if !r.OK() || len(e.Ciphertext) != keyDistCiphertextSize || e.Recipient == kd.Sender ||
			(i > 0 && compareIDs(kd.Entries[i-1].Recipient[:], e.Recipient[:]) >= 0) {
			return nil, malformed(op)
		}
	}
	kd.Sig = r.Raw(signatureSize)
	if !r.Done() {
		return nil, malformed(op)
	}
	return kd, nil
}

// Open verifies kd against the sender's public keys (from its account's replayed chain: AccountState.SenderKey
// refuses revoked and unknown devices), then decrypts only this device's entry, and returns the session with
// the session key already turned into member chain keys. kd may be one chunk of DistributeChunks: the
// session's members are then the sender and that chunk's recipients, and the sender's chain is the same as
// from any other chunk.
func Open(kd *KeyDistribution, sender DevicePublic, me *DeviceKeys) (*Session, error) {
	const op = "open key distribution"
	if sender.ID() != kd.Sender {
		return nil, errorf(op, ErrUnknownSender, "signed as %s, checked against %s", kd.Sender, sender.ID())
	}
	// The signature is checked over a transcript rebuilt from the very fields used below.
	tr, err := kd.transcript()
	if err != nil || !verifySig(sender.Signing, CtxKeyDist, tr, kd.Sig) {
		return nil, errorf(op, ErrBadSignature, "sender %s", kd.Sender)
	}
	var entry *KeyEntry
	for i := range kd.Entries {
		if kd.Entries[i].Recipient == me.ID() {
			entry = &kd.Entries[i]
			break
		}
	}
	if entry == nil {
		return nil, errorf(op, ErrNotRecipient, "device %s", me.ID())
	}
	priv := me.messagingPrivateFor(entry.KeyID)
	if priv == nil {
		return nil, errorf(op, ErrUnknownKey, "messaging key %x", entry.KeyID[:8])
	}
	var key []byte
	key, err = hpke.Open(priv, hpkeKDF(), hpkeAEAD(), keyDistInfo(kd.Conversation, kd.Epoch, kd.Sender, me.ID(), entry.KeyID), entry.Ciphertext)
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("e2ee: %s: %w", op, ErrDecrypt)
	}
	s := &Session{conv: kd.Conversation, epoch: kd.Epoch, root: key}
	members := append([]DeviceID{kd.Sender}, kd.Recipients()...)
	if err := s.finish(members); err != nil {
		return nil, fmt.Errorf("e2ee: %s: %w", op, err)
	}
	return s, nil
}
