package client

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/iagon/gridchat/client/store"
	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/e2ee/safety"
	"github.com/iagon/gridchat/wire"
)

// Conversation errors.
var (
	// ErrUnknownConversation means the client has no such conversation.
	ErrUnknownConversation = errors.New("client: unknown conversation")
	// ErrNotMember means this account is not (or no longer) a member of the group.
	ErrNotMember = errors.New("client: not a member of the conversation")
	// ErrNoRecipients means a conversation has no device to send to.
	ErrNoRecipients = errors.New("client: no recipient devices")
)

// transport sends one envelope to devices and reports the per-device outcome.
type transport interface {
	send(ctx context.Context, id wire.MessageID, ciphertext []byte, to []e2ee.DeviceID) ([]DeliveryStatus, error)
	// limits returns the grid's limits on one send, as the gateway announced them (or their defaults).
	limits() gridLimits
}

// gridLimits are the grid's limits on one send (the gateway's hello, docs/PROTOCOL.md §8).
type gridLimits struct {
	ciphertext int // bytes of one envelope (max_ciphertext_bytes)
	recipients int // devices of one send (max_recipients)
}

// defaultGridLimits are the grid's default limits, assumed when no gateway announced its own.
func defaultGridLimits() gridLimits { return gridLimits{ciphertext: 64 << 10, recipients: 256} }

// kdMessageRoom is the room a key distribution chunk leaves, in one grid envelope, for the message it carries:
// a group's signed record and a short text fit, so a session's first message is usually one envelope.
const kdMessageRoom = 16 << 10

// kdChunkEntries is how many entries one key distribution chunk holds so that it, the sender's signed
// messaging key of keyLen bytes and kdMessageRoom fit in one grid envelope of limit bytes (at least one).
func kdChunkEntries(limit, keyLen int) int {
	return max(1, (limit-kdMessageRoom-fragmentOverhead-keyLen-e2ee.KeyDistOverhead)/e2ee.KeyDistEntrySize)
}

// outgoing is one client envelope and the devices it goes to.
type outgoing struct {
	env []byte
	to  []e2ee.DeviceID
}

// keySource turns a current device (from a replayed chain) into a verified HPKE recipient of key distributions.
type keySource interface {
	recipientKey(ctx context.Context, dev e2ee.DevicePublic) (e2ee.RecipientKey, error)
}

// engineConfig is what an engine needs besides the store and keys.
type engineConfig struct {
	now         func() time.Time // the grid's time as this device estimates it (gridClock.now)
	policy      e2ee.RenewalPolicy
	sentKeep    time.Duration // how long sent messages are kept for resends
	sentMax     int           // how many sent messages are kept per conversation at most
	seenKeep    time.Duration // how long processed message IDs are remembered
	resendEvery time.Duration // minimum time between resend requests to one sender device
	log         *slog.Logger
}

// engine is one device's messaging state machine: sessions, numbering, history, gaps and resends, over e2ee.
// It does no network I/O itself: lookups go through accounts, envelopes through transport, and every
// send that the receive path triggers is handed to async so the receive path never waits on the network.
type engine struct {
	cfg   engineConfig
	st    *store.Store
	cd    codec
	dev   *e2ee.DeviceKeys
	self  e2ee.AccountID
	accts *accounts
	tr    transport
	keys  keySource
	ev    *eventQueue
	async func(func(ctx context.Context))
	// onKeys receives the signed messaging keys a sender attached, and its request for this device's key.
	onKeys func(sender e2ee.DevicePublic, keys [][]byte, want bool)

	mu     sync.Mutex // guards the store's conversation state and the e2ee states loaded from it
	sendMu sync.Mutex // serialises sends so one device's envelopes leave in number order
	asked  map[string]time.Time
	served map[e2ee.DeviceID][]time.Time
	// batchEvents, while a receive batch is being written (under mu), collects its events so they reach the
	// application only once the batch is committed.
	batchEvents *[]Event
}

// emit hands ev to the application: after the current receive batch commits, or now outside one.
func (e *engine) emit(ev Event) {
	if e.batchEvents != nil {
		*e.batchEvents = append(*e.batchEvents, ev)
		return
	}
	e.ev.push(ev)
}

// --- conversations -------------------------------------------------------------------------------------

func (e *engine) conv(id e2ee.ConversationID) (*convRecord, bool) {
	b, ok := e.st.Get(bucketConvs, id.String())
	if !ok {
		return nil, false
	}
	var r convRecord
	if err := e.cd.dec.Unmarshal(b, &r); err != nil {
		e.cfg.log.Error("stored conversation does not decode", "conv", id, "err", err)
		return nil, false
	}
	return &r, true
}

func (e *engine) putConv(b *store.Batch, id e2ee.ConversationID, r *convRecord) error {
	v, err := e.cd.enc.Marshal(r)
	if err != nil {
		return err
	}
	b.Put(bucketConvs, id.String(), v)
	return nil
}

// conversation returns the public view of a conversation.
func (e *engine) conversation(id e2ee.ConversationID) (Conversation, error) {
	r, ok := e.conv(id)
	if !ok {
		return Conversation{}, fmt.Errorf("%w: %s", ErrUnknownConversation, id)
	}
	c := Conversation{ID: id, Kind: r.Kind}
	if len(r.Peer) == 32 {
		c.Peer = e2ee.AccountID(r.Peer)
	}
	if len(r.Group) > 0 {
		g, _, _, err := e.cd.decodeGroupState(r.Group)
		if err == nil {
			c.Group = g
		}
	}
	return c, nil
}

// memberAccounts returns the accounts of a conversation (this account included).
func (e *engine) memberAccounts(id e2ee.ConversationID, r *convRecord) ([]e2ee.AccountID, error) {
	switch r.Kind {
	case Direct:
		return []e2ee.AccountID{e.self, e2ee.AccountID(r.Peer)}, nil
	case Self:
		return []e2ee.AccountID{e.self}, nil
	case Group:
		g, _, _, err := e.cd.decodeGroupState(r.Group)
		if err != nil {
			return nil, err
		}
		if !g.IsMember(e.self) {
			return nil, fmt.Errorf("%w: %s", ErrNotMember, id)
		}
		return g.Members, nil
	}
	return nil, fmt.Errorf("client: conversation %s of unknown kind %d", id, r.Kind)
}

// ensureConv creates a conversation record if there is none.
func (e *engine) ensureConv(id e2ee.ConversationID, r *convRecord) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.conv(id); ok {
		return nil
	}
	r.NextSeq = 1
	return e.st.Update(func(b *store.Batch) error { return e.putConv(b, id, r) })
}

// memberStates fetches the verified states of a conversation's member accounts.
func (e *engine) memberStates(ctx context.Context, members []e2ee.AccountID, refresh bool) ([]*e2ee.AccountState, error) {
	out := make([]*e2ee.AccountState, 0, len(members))
	for _, m := range members {
		st, err := e.accts.get(ctx, m, refresh)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// safetyNumber computes a conversation's safety number from the members' verified states.
func (e *engine) safetyNumber(states []*e2ee.AccountState) (*safety.Number, error) {
	var local safety.Party
	var others []safety.Party
	for _, s := range states {
		if s.Account == e.self {
			local = safetyParty(s)
		} else {
			others = append(others, safetyParty(s))
		}
	}
	if local.ID == nil {
		return nil, fmt.Errorf("client: safety number: own account not among members")
	}
	return safety.New(local, others...)
}

// accountChanged is called when a verified account's device set changes: every conversation with that
// account gets its safety number recomputed, and a change is reported.
func (e *engine) accountChanged(ctx context.Context, old, cur *e2ee.AccountState) {
	for _, key := range e.st.Keys(bucketConvs) {
		id, err := e2ee.ParseConversationID(key)
		if err != nil {
			continue
		}
		r, ok := e.conv(id)
		if !ok {
			continue
		}
		members, err := e.memberAccounts(id, r)
		if err != nil || !slices.Contains(members, cur.Account) {
			continue
		}
		states := make([]*e2ee.AccountState, 0, len(members))
		for _, m := range members {
			s := cur
			if m != cur.Account {
				if s, _ = e.accts.stored(m); s == nil {
					break
				}
			}
			states = append(states, s)
		}
		if len(states) != len(members) {
			continue
		}
		n, err := e.safetyNumber(states)
		if err != nil {
			continue
		}
		e.mu.Lock()
		r, ok = e.conv(id)
		prev := ""
		if ok && r.Safety != n.String() {
			prev = r.Safety
			r.Safety = n.String()
			_ = e.st.Update(func(b *store.Batch) error { return e.putConv(b, id, r) })
		}
		e.mu.Unlock()
		if prev != "" {
			e.ev.push(&SafetyNumberEvent{Conversation: id, Account: cur.Account, Old: prev, New: n.String()})
		}
	}
}

// recordSafety stores a conversation's current safety number the first time it is computed.
func (e *engine) recordSafety(id e2ee.ConversationID, n *safety.Number) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.conv(id)
	if !ok || r.Safety != "" {
		return
	}
	r.Safety = n.String()
	_ = e.st.Update(func(b *store.Batch) error { return e.putConv(b, id, r) })
}

// --- sending -------------------------------------------------------------------------------------------

// sendOpts restricts a send.
type sendOpts struct {
	only     []e2ee.DeviceID // send to these devices only (resends, resend requests, history)
	noRecord bool            // do not add to this device's history or sent store (resends)
}

// send seals p in conversation conv and sends it. Numbered payloads get the next number unless p.Seq is
// already set (a resend). It returns the number used.
func (e *engine) send(ctx context.Context, conv e2ee.ConversationID, p *payload, o sendOpts) (uint64, error) {
	e.sendMu.Lock()
	defer e.sendMu.Unlock()
	r, ok := e.conv(conv)
	if !ok {
		return 0, fmt.Errorf("%w: %s", ErrUnknownConversation, conv)
	}
	members, err := e.memberAccounts(conv, r)
	if err != nil {
		return 0, err
	}
	states, err := e.memberStates(ctx, members, false)
	if err != nil {
		return 0, err
	}
	if r.Safety == "" { // the first number is the baseline later changes are reported against
		if n, err := e.safetyNumber(states); err == nil {
			e.recordSafety(conv, n)
		}
	}
	var devices []e2ee.DevicePublic
	for _, s := range states {
		for _, d := range s.Devices {
			devices = append(devices, d.Public)
		}
	}
	lim := e.tr.limits()
	outs, seq, recipients, err := e.seal(ctx, conv, p, devices, o, lim)
	if err != nil {
		return 0, err
	}
	if len(recipients) == 0 {
		return seq, nil // a conversation with only this device: nothing to deliver
	}
	byDev := make(map[e2ee.DeviceID]DeliveryStatus, len(recipients))
	for _, out := range outs {
		sts, err := e.transmit(ctx, out.env, out.to, lim)
		if err != nil {
			return seq, fmt.Errorf("client: send to %d devices: %w", len(out.to), err)
		}
		for _, st := range sts {
			byDev[st.Device] = st
		}
	}
	statuses := make([]DeliveryStatus, len(recipients))
	for i, d := range recipients {
		statuses[i] = byDev[d]
	}
	if p.numbered() && !o.noRecord {
		e.ev.push(&DeliveryEvent{Conversation: conv, Seq: seq, Statuses: statuses})
	}
	return seq, nil
}

// transmit sends one client envelope to devices: as fragments when it is over the grid's envelope limit, and
// in sends of at most the grid's recipient limit. It returns one status per device, in to's order: a device's
// worst status over the fragments (failed, then offline, then stored, then delivered).
func (e *engine) transmit(ctx context.Context, env []byte, to []e2ee.DeviceID, lim gridLimits) ([]DeliveryStatus, error) {
	id := newMessageID()
	pieces := [][]byte{env}
	if len(env) > lim.ciphertext {
		var err error
		if pieces, err = e.cd.fragmentEnvelope(id, env, lim.ciphertext); err != nil {
			return nil, err
		}
	}
	out := make([]DeliveryStatus, len(to))
	for i, d := range to {
		out[i] = DeliveryStatus{Device: d, Status: wire.StatusDelivered}
	}
	per := max(lim.recipients, 1)
	for _, piece := range pieces {
		pid := id
		if len(pieces) > 1 {
			pid = newMessageID()
		}
		for lo := 0; lo < len(to); lo += per {
			hi := min(lo+per, len(to))
			sts, err := e.tr.send(ctx, pid, piece, to[lo:hi])
			if err != nil {
				return nil, err
			}
			if len(sts) != hi-lo {
				return nil, fmt.Errorf("client: send: %d statuses for %d devices", len(sts), hi-lo)
			}
			for i, st := range sts {
				out[lo+i] = worseStatus(out[lo+i], st)
			}
		}
	}
	return out, nil
}

// statusRank orders delivery statuses from best to worst.
func statusRank(s string) int {
	switch s {
	case wire.StatusDelivered:
		return 0
	case wire.StatusStored:
		return 1
	case wire.StatusOffline:
		return 2
	}
	return 3
}

// worseStatus merges the statuses of two envelopes to one device: the worse one, and for two "stored" the
// fewer receipts.
func worseStatus(a, b DeliveryStatus) DeliveryStatus {
	ra, rb := statusRank(a.Status), statusRank(b.Status)
	switch {
	case rb > ra:
		return b
	case ra == rb && a.Status == wire.StatusStored && b.Receipts < a.Receipts:
		return b
	}
	return a
}

// seal renews the session if due, numbers and seals p, and records it, atomically in the store.
// It returns the envelopes to send (one per key distribution chunk when the message carries one) and every
// recipient device.
func (e *engine) seal(ctx context.Context, conv e2ee.ConversationID, p *payload, devices []e2ee.DevicePublic, o sendOpts, lim gridLimits) ([]outgoing, uint64, []e2ee.DeviceID, error) {
	now := e.cfg.now()
	current := make([]e2ee.DeviceID, 0, len(devices))
	for _, d := range devices {
		current = append(current, d.ID())
	}
	// Resolve recipient keys before taking the lock: it may ask the network.
	var rkeys []e2ee.RecipientKey
	needKeys := func() error {
		if rkeys != nil {
			return nil
		}
		for _, d := range devices {
			if d.ID() == e.dev.ID() {
				continue
			}
			k, err := e.keys.recipientKey(ctx, d)
			if err != nil {
				return fmt.Errorf("client: key of device %s: %w", d.ID(), err)
			}
			rkeys = append(rkeys, k)
		}
		return nil
	}
	// Decide on renewal, and resolve recipient keys before taking the lock for good: it may ask the network.
	// Only sends change the sender record, and sendMu serialises them, so the decision stays valid.
	e.mu.Lock()
	sr, err := e.senderRec(conv)
	e.mu.Unlock()
	if err != nil {
		return nil, 0, nil, err
	}
	renew := sr == nil
	if sr != nil {
		members := make([]e2ee.DeviceID, len(sr.Members))
		for i, m := range sr.Members {
			members[i] = e2ee.DeviceID(m)
		}
		usage := e2ee.SessionUsage{Started: time.UnixMilli(sr.Started), Messages: sr.Count, Members: members}
		renew = e.cfg.policy.Due(usage, current, now) != e2ee.RenewNotDue
	}
	if renew && len(current) > 1 {
		if err := needKeys(); err != nil {
			return nil, 0, nil, err
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.conv(conv)
	if !ok {
		return nil, 0, nil, fmt.Errorf("%w: %s", ErrUnknownConversation, conv)
	}
	var sender *e2ee.Sender
	if renew {
		if len(current) <= 1 {
			// Only this device: there is nobody to distribute a key to.
			return nil, 0, nil, e.recordLocalOnly(conv, r, p, o, now)
		}
		epoch := uint64(1)
		if sr != nil {
			epoch = sr.Epoch + 1
		}
		s, err := e2ee.NewSession(conv, epoch)
		if err != nil {
			return nil, 0, nil, err
		}
		per := kdChunkEntries(lim.ciphertext, len(e.dev.MessagingKey().Encode()))
		kds, err := e2ee.DistributeChunks(e.dev, s, rkeys, per)
		if err != nil {
			return nil, 0, nil, fmt.Errorf("client: distribute session key: %w", err)
		}
		sender, err = s.Sender(e.dev)
		if err != nil {
			return nil, 0, nil, err
		}
		sr = &senderRecord{Epoch: epoch, Started: now.UnixMilli(), V: senderRecordVersion}
		for _, kd := range kds {
			sr.KeyDists = append(sr.KeyDists, kd.Encode())
		}
		for _, d := range current {
			sr.Members = append(sr.Members, d[:])
		}
	} else {
		sender, err = e2ee.DecodeSender(sr.Sender, e.dev)
		if err != nil {
			return nil, 0, nil, fmt.Errorf("client: stored session of %s: %w", conv, err)
		}
	}
	attachKD := sr.Count == 0 || o.only != nil
	if p.numbered() {
		if p.Seq == 0 { // a new message; a resend keeps its number and counter
			p.Seq = r.NextSeq
			r.NextSeq++
			p.Clock = r.tick(now)
		}
		if sr.First == 0 {
			sr.First = p.Seq
		}
		p.First = min(sr.First, p.Seq)
		if r.Kind == Direct {
			p.Peer = slices.Clone(r.Peer)
		}
		if r.Kind == Group && attachKD && len(p.Group) == 0 {
			p.Group = slices.Clone(r.Group)
		}
	}
	if p.SentMS == 0 {
		p.SentMS = now.UnixMilli()
	}
	pt, err := e.cd.encodePayload(p)
	if err != nil {
		return nil, 0, nil, err
	}
	m, err := sender.Seal(pt)
	if err != nil {
		return nil, 0, nil, err
	}
	to := o.only
	if to == nil {
		to = slices.DeleteFunc(current, func(d e2ee.DeviceID) bool { return d == e.dev.ID() })
	}
	outs, err := e.envelopes(m.Encode(), sr, attachKD, to)
	if err != nil {
		return nil, 0, nil, err
	}
	sr.Count++
	sr.Sender = sender.Encode()
	err = e.st.Update(func(b *store.Batch) error {
		if err := e.putConv(b, conv, r); err != nil {
			return err
		}
		v, err := e.cd.enc.Marshal(sr)
		if err != nil {
			return err
		}
		b.Put(bucketSenders, conv.String(), v)
		if p.numbered() && !o.noRecord {
			sv, err := e.cd.enc.Marshal(sentRecord{TimeMS: now.UnixMilli(), Epoch: sr.Epoch, Payload: pt})
			if err != nil {
				return err
			}
			b.Put(bucketSent, sentKey(conv, p.Seq), sv)
			return e.putMessage(b, conv, e.self, e.dev.ID(), p, now)
		}
		return nil
	})
	if err != nil {
		return nil, 0, nil, fmt.Errorf("client: record sent message: %w", err)
	}
	if p.numbered() && !o.noRecord {
		e.ev.push(&MessageEvent{Message: e.toMessage(conv, e.self, e.dev.ID(), p, now)})
	}
	return outs, p.Seq, to, nil
}

// envelopes builds the client envelopes that carry the sealed message to devices to. Without the key
// distribution it is one envelope for all; with it, one per key distribution chunk, each to the devices that
// chunk names (a device named by none, which cannot open any, gets the first).
func (e *engine) envelopes(msg []byte, sr *senderRecord, attachKD bool, to []e2ee.DeviceID) ([]outgoing, error) {
	if !attachKD {
		eb, err := e.cd.encodeEnvelope(&envelope{Message: msg})
		if err != nil {
			return nil, err
		}
		return []outgoing{{env: eb, to: to}}, nil
	}
	chunkOf := map[e2ee.DeviceID]int{}
	for i, b := range sr.KeyDists {
		kd, err := e2ee.DecodeKeyDistribution(b)
		if err != nil {
			return nil, fmt.Errorf("client: stored key distribution chunk %d: %w", i, err)
		}
		for _, d := range kd.Recipients() {
			chunkOf[d] = i
		}
	}
	groups := make([][]e2ee.DeviceID, len(sr.KeyDists))
	for _, d := range to {
		i := chunkOf[d]
		groups[i] = append(groups[i], d)
	}
	keys := [][]byte{e.dev.MessagingKey().Encode()}
	var outs []outgoing
	for i, g := range groups {
		if len(g) == 0 {
			continue
		}
		eb, err := e.cd.encodeEnvelope(&envelope{KeyDist: sr.KeyDists[i], Message: msg, Keys: keys})
		if err != nil {
			return nil, err
		}
		outs = append(outs, outgoing{env: eb, to: g})
	}
	return outs, nil
}

// recordLocalOnly records a numbered payload in a conversation whose only device is this one.
func (e *engine) recordLocalOnly(conv e2ee.ConversationID, r *convRecord, p *payload, o sendOpts, now time.Time) error {
	if !p.numbered() || o.noRecord {
		return nil
	}
	if p.Seq == 0 {
		p.Seq = r.NextSeq
		r.NextSeq++
		p.Clock = r.tick(now)
	}
	p.SentMS = now.UnixMilli()
	err := e.st.Update(func(b *store.Batch) error {
		if err := e.putConv(b, conv, r); err != nil {
			return err
		}
		return e.putMessage(b, conv, e.self, e.dev.ID(), p, now)
	})
	if err == nil {
		e.ev.push(&MessageEvent{Message: e.toMessage(conv, e.self, e.dev.ID(), p, now)})
	}
	return err
}

func (e *engine) senderRec(conv e2ee.ConversationID) (*senderRecord, error) {
	b, ok := e.st.Get(bucketSenders, conv.String())
	if !ok {
		return nil, nil
	}
	sr, err := e.cd.decodeSenderRecord(b)
	if err != nil {
		return nil, fmt.Errorf("client: stored session of %s: %w", conv, err)
	}
	return sr, nil
}

// putMessage records a numbered payload in the conversation's history. Of a payload of a type this client does
// not know it keeps what every numbered payload has (number, times, counter, type) and the encoded payload, which
// a later version that knows the type shows (decodeMessage).
func (e *engine) putMessage(b *store.Batch, conv e2ee.ConversationID, acct e2ee.AccountID, dev e2ee.DeviceID, p *payload, recv time.Time) error {
	mr := msgRecord{Sender: acct[:], Device: dev[:], Seq: p.Seq, SentMS: p.SentMS, RecvMS: recv.UnixMilli(), Type: p.Type,
		Outgoing: acct == e.self, Clock: p.Clock}
	if p.Type.known() {
		mr.Text, mr.Attachment = p.Text, p.Attachment
	} else {
		mr.Payload = p.raw
	}
	if p.Type == PayloadGroupState {
		mr.Group = p.Group
	}
	v, err := e.cd.enc.Marshal(mr)
	if err != nil {
		return err
	}
	b.Put(msgBucket(conv), msgKey(time.UnixMilli(p.SentMS), dev, p.Seq), v)
	return nil
}

func (e *engine) toMessage(conv e2ee.ConversationID, acct e2ee.AccountID, dev e2ee.DeviceID, p *payload, recv time.Time) Message {
	m := Message{Conversation: conv, Sender: acct, SenderDevice: dev, Seq: p.Seq, Sent: time.UnixMilli(p.SentMS).UTC(),
		Received: recv.UTC(), Type: p.Type, Outgoing: acct == e.self, Clock: p.Clock}
	if !p.Type.known() {
		m.Unsupported = true
		return m
	}
	m.Text = p.Text
	if p.Attachment != nil {
		m.Attachment = &Attachment{Name: p.Attachment.Name, MIME: p.Attachment.MIME, Data: p.Attachment.Data}
	}
	if p.Type == PayloadGroupState {
		if g, _, _, err := e.cd.decodeGroupState(p.Group); err == nil {
			m.Group = g
		}
	}
	return m
}

func (e *engine) decodeMessage(conv e2ee.ConversationID, v []byte) (Message, error) {
	var mr msgRecord
	if err := e.cd.dec.Unmarshal(v, &mr); err != nil || len(mr.Sender) != 32 || len(mr.Device) != 32 {
		return Message{}, fmt.Errorf("client: stored message does not decode: %v", err)
	}
	p := &payload{Type: mr.Type, Seq: mr.Seq, SentMS: mr.SentMS, Text: mr.Text, Attachment: mr.Attachment, Group: mr.Group, Clock: mr.Clock}
	if mr.Payload != nil {
		// Stored by a version that did not know the type; shown if this one does.
		if kp, err := e.cd.decodePayload(mr.Payload); err == nil && kp.Type == mr.Type && kp.Type.known() {
			p.Text, p.Attachment, p.Group = kp.Text, kp.Attachment, kp.Group
		}
	}
	m := e.toMessage(conv, e2ee.AccountID(mr.Sender), e2ee.DeviceID(mr.Device), p, time.UnixMilli(mr.RecvMS))
	m.Outgoing = mr.Outgoing || e2ee.AccountID(mr.Sender) == e.self
	return m, nil
}

// messages returns a conversation's history in its causal order (CompareMessages).
func (e *engine) messages(conv e2ee.ConversationID) ([]Message, error) {
	bucket := msgBucket(conv)
	var out []Message
	for _, k := range e.st.Keys(bucket) {
		v, ok := e.st.Get(bucket, k)
		if !ok {
			continue
		}
		m, err := e.decodeMessage(conv, v)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	slices.SortFunc(out, CompareMessages)
	return out, nil
}

// --- receiving -----------------------------------------------------------------------------------------

// receive processes one envelope pushed to this device. It returns nil when the envelope may be acknowledged
// (processed, a duplicate, or refused for good), and an error only when it should be delivered again (a
// transient failure such as an unreachable directory).
func (e *engine) receive(ctx context.Context, id wire.MessageID, from e2ee.DeviceID, ct []byte) error {
	idKey := hex.EncodeToString(id[:])
	if _, seen := e.st.Get(bucketSeen, idKey); seen {
		return nil
	}
	env, err := e.cd.decodeEnvelope(ct)
	if err != nil {
		e.cfg.log.Warn("dropping undecodable envelope", "from", from, "err", err)
		return e.markSeen(idKey)
	}
	if env.Frag != nil {
		return e.receiveFragment(ctx, id, from, env.Frag)
	}
	return e.receiveEnvelope(ctx, idKey, from, env)
}

// receiveEnvelope processes one whole (unfragmented or reassembled) envelope under message ID idKey (hex).
func (e *engine) receiveEnvelope(ctx context.Context, idKey string, from e2ee.DeviceID, env *envelope) error {
	if env.empty() {
		// A later version's envelope with only elective content: nothing for this client (docs/PROTOCOL.md §9.1).
		e.cfg.log.Debug("ignoring envelope with only elective keys this client does not know", "from", from)
		return e.markSeen(idKey)
	}
	senderState, senderPub, err := e.accts.ofDevice(ctx, from)
	if err != nil {
		if errors.Is(err, ErrRevokedDevice) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrForked) {
			e.cfg.log.Warn("dropping envelope from a device that is not current", "from", from, "err", err)
			return e.markSeen(idKey)
		}
		return err
	}
	if len(env.Keys) > 0 || env.WantKeys {
		e.onKeys(senderPub, env.Keys, env.WantKeys)
	}
	if len(env.Message) == 0 {
		return e.markSeen(idKey)
	}
	m, err := e2ee.DecodeMessage(env.Message)
	if err != nil || m.Sender != from {
		e.cfg.log.Warn("dropping envelope with a bad or mismatched message", "from", from, "err", err)
		return e.markSeen(idKey)
	}
	var kd *e2ee.KeyDistribution
	if len(env.KeyDist) > 0 {
		kd, err = e2ee.DecodeKeyDistribution(env.KeyDist)
		if err != nil || kd.Sender != from || kd.Conversation != m.Conversation || kd.Epoch != m.Epoch {
			e.cfg.log.Warn("dropping envelope with a bad key distribution", "from", from, "err", err)
			return e.markSeen(idKey)
		}
	}
	// A group payload may need its signer's account; resolve lazily, outside the lock.
	e.mu.Lock()
	retry, err := e.receiveLocked(ctx, idKey, senderState, senderPub, kd, m, env)
	e.mu.Unlock()
	if err != nil {
		return err
	}
	for _, p := range retry {
		e.retryPending(ctx, p)
	}
	return nil
}

func (e *engine) markSeen(idKey string) error {
	return e.st.Put(bucketSeen, idKey, fmt.Appendf(nil, "%d", e.cfg.now().UnixMilli()))
}

// receiveLocked opens the message and applies it. It returns pending envelopes that a new session unlocked.
func (e *engine) receiveLocked(ctx context.Context, idKey string, sender *e2ee.AccountState, senderPub e2ee.DevicePublic,
	kd *e2ee.KeyDistribution, m *e2ee.Message, env *envelope) ([]string, error) {
	from := senderPub.ID()
	rkey := receiverKey(m.Conversation, from, m.Epoch)
	var unlocked []string
	var rcv *e2ee.Receiver
	if b, ok := e.st.Get(bucketReceivers, rkey); ok {
		var err error
		if rcv, err = e2ee.DecodeReceiver(b); err != nil {
			return nil, fmt.Errorf("client: stored receiver %s: %w", rkey, err)
		}
	} else if kd != nil {
		s, err := e2ee.Open(kd, senderPub, e.dev)
		if err != nil {
			e.cfg.log.Warn("dropping envelope whose key distribution does not open", "from", from, "err", err)
			return nil, e.markSeen(idKey)
		}
		if rcv, err = s.Receiver(senderPub, e2ee.ReceiverOptions{}); err != nil {
			return nil, e.markSeen(idKey)
		}
		unlocked = e.pendingFor(m.Conversation, from, m.Epoch)
	} else {
		// Sealed in a session whose key has not reached this device: keep it, and ask for the session again.
		v, err := e.cd.enc.Marshal(pendingRecord{Sender: from[:], Envelope: mustEnvelope(e.cd, env), TimeMS: e.cfg.now().UnixMilli()})
		if err != nil {
			return nil, err
		}
		if err := e.st.Put(bucketPending, pendingKey(m.Conversation, from, m.Epoch, idKey), v); err != nil {
			return nil, err
		}
		e.ev.push(&GapEvent{Conversation: m.Conversation, SenderDevice: from, Reason: GapUndecryptable, Count: 1})
		e.requestResend(m.Conversation, from, nil, m.Epoch)
		return nil, nil
	}
	pt, err := rcv.Open(m)
	if err != nil {
		if errors.Is(err, e2ee.ErrReplay) {
			return unlocked, e.markSeen(idKey)
		}
		e.cfg.log.Warn("dropping message that does not open", "from", from, "err", err)
		return unlocked, e.markSeen(idKey)
	}
	p, err := e.cd.decodePayload(pt)
	if err != nil {
		e.cfg.log.Warn("dropping message with a bad payload", "from", from, "err", err)
		return unlocked, e.saveReceiverSeen(rkey, rcv, idKey, nil)
	}
	apply, err := e.admit(ctx, m.Conversation, sender, p)
	if err != nil {
		e.cfg.log.Warn("refusing message", "from", from, "conv", m.Conversation, "err", err)
		return unlocked, e.saveReceiverSeen(rkey, rcv, idKey, nil)
	}
	return unlocked, e.saveReceiverSeen(rkey, rcv, idKey, func(b *store.Batch) error {
		return apply(b, from)
	})
}

func mustEnvelope(cd codec, env *envelope) []byte {
	b, _ := cd.encodeEnvelope(&envelope{KeyDist: env.KeyDist, Message: env.Message})
	return b
}

func pendingKey(conv e2ee.ConversationID, dev e2ee.DeviceID, epoch uint64, idKey string) string {
	return receiverKey(conv, dev, epoch) + "/" + idKey
}

func (e *engine) pendingFor(conv e2ee.ConversationID, dev e2ee.DeviceID, epoch uint64) []string {
	prefix := receiverKey(conv, dev, epoch) + "/"
	var out []string
	for _, k := range e.st.Keys(bucketPending) {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	return out
}

// retryPending processes a kept envelope again now that its session arrived.
func (e *engine) retryPending(ctx context.Context, key string) {
	b, ok := e.st.Get(bucketPending, key)
	if !ok {
		return
	}
	var pr pendingRecord
	if err := e.cd.dec.Unmarshal(b, &pr); err != nil || len(pr.Sender) != 32 {
		_ = e.st.Delete(bucketPending, key)
		return
	}
	idKey := key[strings.LastIndexByte(key, '/')+1:]
	idb, err := hex.DecodeString(idKey)
	if err != nil || len(idb) != wire.MessageIDSize {
		_ = e.st.Delete(bucketPending, key)
		return
	}
	if err := e.receive(ctx, wire.MessageID(idb), e2ee.DeviceID(pr.Sender), pr.Envelope); err != nil {
		return
	}
	_ = e.st.Delete(bucketPending, key)
}

// saveReceiverSeen stores the advanced receiver state, the message ID as seen and whatever apply adds, in one
// atomic batch.
func (e *engine) saveReceiverSeen(rkey string, rcv *e2ee.Receiver, idKey string, apply func(b *store.Batch) error) error {
	var evs []Event
	e.batchEvents = &evs
	err := e.st.Update(func(b *store.Batch) error {
		b.Put(bucketReceivers, rkey, rcv.Encode())
		b.Put(bucketSeen, idKey, fmt.Appendf(nil, "%d", e.cfg.now().UnixMilli()))
		if apply != nil {
			return apply(b)
		}
		return nil
	})
	e.batchEvents = nil
	if err != nil {
		return err
	}
	for _, ev := range evs {
		e.ev.push(ev)
	}
	return nil
}

// admit checks that the sender may speak in the conversation (creating it when this is its first message)
// and returns the function that records the payload's effects.
func (e *engine) admit(ctx context.Context, conv e2ee.ConversationID, sender *e2ee.AccountState, p *payload) (func(b *store.Batch, from e2ee.DeviceID) error, error) {
	r, known := e.conv(conv)
	if !known {
		var err error
		if r, err = e.newIncomingConv(ctx, conv, sender, p); err != nil {
			return nil, err
		}
	}
	switch r.Kind {
	case Direct:
		if sender.Account != e.self && sender.Account != e2ee.AccountID(r.Peer) {
			return nil, fmt.Errorf("%w: %s in a direct conversation", ErrNotMember, sender.Account)
		}
	case Self:
		if sender.Account != e.self {
			return nil, fmt.Errorf("%w: %s in the self conversation", ErrNotMember, sender.Account)
		}
	case Group:
		g, _, _, err := e.cd.decodeGroupState(r.Group)
		if err != nil {
			return nil, err
		}
		stale := false
		if p.Type == PayloadGroupState && known {
			ng, _, _, err := e.cd.decodeGroupState(p.Group)
			if err != nil {
				return nil, err
			}
			// A record this device already has (or an older one, resent) changes nothing.
			stale = ng.Version <= g.Version
		}
		if p.Type == PayloadGroupState && known && !stale {
			signer, err := e.groupSigner(ctx, p.Group)
			if err != nil {
				return nil, err
			}
			ng, err := e.cd.verifyGroupState(p.Group, g, r.Group, signer)
			if err != nil {
				return nil, err
			}
			if !g.IsMember(sender.Account) && !ng.IsMember(sender.Account) {
				return nil, fmt.Errorf("%w: %s", ErrNotMember, sender.Account)
			}
			r.Group = p.Group
		} else if !g.IsMember(sender.Account) {
			return nil, fmt.Errorf("%w: %s", ErrNotMember, sender.Account)
		}
	}
	now := e.cfg.now()
	return func(b *store.Batch, from e2ee.DeviceID) error {
		switch {
		case p.numbered():
			fresh, err := e.track(b, conv, from, p)
			if err != nil || !fresh {
				return err
			}
			r.witness(orderOf(p.Clock, p.SentMS), now)
			if err := e.putConv(b, conv, r); err != nil {
				return err
			}
			if err := e.putMessage(b, conv, sender.Account, from, p, now); err != nil {
				return err
			}
			e.emit(&MessageEvent{Message: e.toMessage(conv, sender.Account, from, p, now)})
		case p.Type == PayloadResendRequest:
			if !known {
				return nil
			}
			if e2ee.DeviceID(p.Resend.Sender) == e.dev.ID() {
				req := *p.Resend
				e.async(func(ctx context.Context) { e.answerResend(ctx, conv, from, &req) })
			}
		case p.Type == PayloadHistory:
			if sender.Account != e.self || r.Kind != Self {
				return nil
			}
			if !known {
				if err := e.putConv(b, conv, r); err != nil {
					return err
				}
			}
			return e.historyChunk(b, from, p.History)
		case !p.Type.known():
			// An unnumbered payload of a type this client does not know is a signal of a later version (a typing
			// indicator, a read receipt), not content, which is always numbered: ignored, so that older clients
			// are not flooded with notices of messages they cannot show (docs/PROTOCOL.md §9.3 "Extensions").
			e.cfg.log.Debug("ignoring unnumbered payload of an unknown type", "from", from, "type", p.Type)
		}
		return nil
	}, nil
}

// newIncomingConv makes the record of a conversation this device first hears of from a message.
func (e *engine) newIncomingConv(ctx context.Context, conv e2ee.ConversationID, sender *e2ee.AccountState, p *payload) (*convRecord, error) {
	if conv == SelfConversationID(e.self) && sender.Account == e.self {
		return &convRecord{Kind: Self, NextSeq: 1}, nil
	}
	if len(p.Peer) == 32 {
		peer := e2ee.AccountID(p.Peer)
		if peer == e.self {
			peer = sender.Account
		}
		if peer != e.self && DirectConversationID(e.self, peer) == conv && (sender.Account == peer || sender.Account == e.self) {
			return &convRecord{Kind: Direct, Peer: peer[:], NextSeq: 1}, nil
		}
	}
	if len(p.Group) > 0 {
		signer, err := e.groupSigner(ctx, p.Group)
		if err != nil {
			return nil, err
		}
		// The first record this device sees of a group must be verifiable on its own: version 1, or a later
		// version signed by an admin of itself (the device joined after the group was created).
		g, req, body, err := e.cd.decodeGroupState(p.Group)
		if err != nil {
			return nil, err
		}
		if g.Version == 1 {
			if _, err := e.cd.verifyGroupState(p.Group, nil, nil, signer); err != nil {
				return nil, err
			}
		} else {
			dev, err := signer.SenderKey(req.Device)
			if err != nil || signer.Account != g.Signer || !g.IsAdmin(g.Signer) {
				return nil, fmt.Errorf("%w: first record of group %s", ErrBadGroupState, conv)
			}
			if err := req.Verify(dev, GroupStatePurpose, body, req.Time, e2ee.ClockSkew); err != nil {
				return nil, fmt.Errorf("%w: %v", ErrBadGroupState, err)
			}
		}
		if g.Conversation != conv || !g.IsMember(e.self) || !g.IsMember(sender.Account) {
			return nil, fmt.Errorf("%w: group record for another conversation or members", ErrBadGroupState)
		}
		return &convRecord{Kind: Group, Group: p.Group, NextSeq: 1}, nil
	}
	return nil, fmt.Errorf("%w: %s", ErrUnknownConversation, conv)
}

func (e *engine) groupSigner(ctx context.Context, rec []byte) (*e2ee.AccountState, error) {
	g, _, _, err := e.cd.decodeGroupState(rec)
	if err != nil {
		return nil, err
	}
	return e.accts.get(ctx, g.Signer, false)
}

// track applies a numbered payload to its sender's numbering: it reports whether the payload is new, and
// records and reports a gap (asking for a resend) when numbers were skipped.
func (e *engine) track(b *store.Batch, conv e2ee.ConversationID, from e2ee.DeviceID, p *payload) (bool, error) {
	key := pairKey(conv, from)
	var t recvTrack
	if v, ok := e.st.Get(bucketTracks, key); ok {
		if err := e.cd.dec.Unmarshal(v, &t); err != nil {
			return false, err
		}
	} else if p.First > 0 {
		t.Max = p.First - 1
	} else {
		t.Max = p.Seq - 1
	}
	switch {
	case p.Seq <= t.Max:
		i := slices.Index(t.Missing, p.Seq)
		if i < 0 {
			return false, nil // a duplicate: never surfaced twice
		}
		t.Missing = slices.Delete(t.Missing, i, i+1)
	case p.Seq > t.Max+1:
		var gap []uint64
		for s := t.Max + 1; s < p.Seq && len(t.Missing)+len(gap) < 4*MaxResendSeqs; s++ {
			gap = append(gap, s)
		}
		t.Missing = append(t.Missing, gap...)
		t.Max = p.Seq
		e.emit(&GapEvent{Conversation: conv, SenderDevice: from, Reason: GapMissing, Count: len(gap), Seqs: gap})
		e.requestResend(conv, from, gap, 0)
	default:
		t.Max = p.Seq
	}
	v, err := e.cd.enc.Marshal(t)
	if err != nil {
		return false, err
	}
	b.Put(bucketTracks, key, v)
	return true, nil
}

// requestResend asks device from, asynchronously and rate-limited, to resend seqs (or everything of epoch).
func (e *engine) requestResend(conv e2ee.ConversationID, from e2ee.DeviceID, seqs []uint64, epoch uint64) {
	key := fmt.Sprintf("%s/%d", pairKey(conv, from), epoch)
	now := e.cfg.now()
	if last, ok := e.asked[key]; ok && now.Sub(last) < e.cfg.resendEvery && epoch != 0 {
		return
	}
	e.asked[key] = now
	if len(seqs) > MaxResendSeqs {
		seqs = seqs[:MaxResendSeqs]
	}
	req := &resendBody{Sender: from[:], Seqs: slices.Clone(seqs), Epoch: epoch}
	e.async(func(ctx context.Context) {
		if _, err := e.send(ctx, conv, &payload{Type: PayloadResendRequest, Resend: req}, sendOpts{only: []e2ee.DeviceID{from}, noRecord: true}); err != nil {
			e.cfg.log.Warn("resend request failed", "conv", conv, "to", from, "err", err)
		}
	})
}

// answerResend resends what device to asked for, from the sent store, to that device only.
func (e *engine) answerResend(ctx context.Context, conv e2ee.ConversationID, to e2ee.DeviceID, req *resendBody) {
	now := e.cfg.now()
	e.mu.Lock()
	// Rate limit: at most 4*MaxResendSeqs resent messages per requesting device per minute.
	recent := slices.DeleteFunc(e.served[to], func(t time.Time) bool { return now.Sub(t) > time.Minute })
	budget := 4*MaxResendSeqs - len(recent)
	var recs []sentRecord
	if req.Epoch != 0 {
		for _, k := range e.st.Keys(bucketSent) {
			if !strings.HasPrefix(k, conv.String()+"/") {
				continue
			}
			if sr, ok := e.sentRec(k); ok && sr.Epoch == req.Epoch {
				recs = append(recs, sr)
			}
		}
	} else {
		for _, s := range req.Seqs {
			if sr, ok := e.sentRec(sentKey(conv, s)); ok {
				recs = append(recs, sr)
			}
		}
	}
	if len(recs) > budget {
		recs = recs[:max(budget, 0)]
	}
	for range recs {
		recent = append(recent, now)
	}
	e.served[to] = recent
	e.mu.Unlock()
	for _, sr := range recs {
		p, err := e.cd.decodePayload(sr.Payload)
		if err != nil {
			continue
		}
		p.Resent = true
		if _, err := e.send(ctx, conv, p, sendOpts{only: []e2ee.DeviceID{to}, noRecord: true}); err != nil {
			e.cfg.log.Warn("resend failed", "conv", conv, "to", to, "seq", p.Seq, "err", err)
			return
		}
	}
}

func (e *engine) sentRec(key string) (sentRecord, bool) {
	b, ok := e.st.Get(bucketSent, key)
	if !ok {
		return sentRecord{}, false
	}
	var sr sentRecord
	if err := e.cd.dec.Unmarshal(b, &sr); err != nil {
		return sentRecord{}, false
	}
	return sr, true
}

// prune forgets sent messages past their keep time (or over the per-conversation cap), processed message
// IDs past theirs, and incomplete fragment sets past fragmentKeep.
func (e *engine) prune() {
	now := e.cfg.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pruneFragSets(now)
	perConv := map[string]int{}
	keys := e.st.Keys(bucketSent)
	_ = e.st.Update(func(b *store.Batch) error {
		for i := len(keys) - 1; i >= 0; i-- { // newest numbers first within each conversation
			k := keys[i]
			conv := k[:strings.IndexByte(k, '/')]
			perConv[conv]++
			sr, ok := e.sentRec(k)
			if !ok || now.Sub(time.UnixMilli(sr.TimeMS)) > e.cfg.sentKeep || perConv[conv] > e.cfg.sentMax {
				b.Delete(bucketSent, k)
			}
		}
		for _, k := range e.st.Keys(bucketSeen) {
			v, _ := e.st.Get(bucketSeen, k)
			var ms int64
			if _, err := fmt.Sscanf(string(v), "%d", &ms); err != nil || now.Sub(time.UnixMilli(ms)) > e.cfg.seenKeep {
				b.Delete(bucketSeen, k)
			}
		}
		return nil
	})
}
