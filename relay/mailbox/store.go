package mailbox

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"

	"github.com/iagon/gridchat/wire"
)

// Envelope is one stored envelope. Its order key is (Stamp, MessageID): Stamp is set once by the sender's
// gateway and travels with the envelope to every replica, so every replica orders a mailbox the same way.
type Envelope struct {
	MessageID  wire.MessageID
	Sender     wire.DeviceID
	Recipient  wire.DeviceID
	Stamp      int64 // Unix nanoseconds, from the sender's gateway
	Ciphertext []byte
}

// Less reports whether e comes before f in delivery order.
func (e *Envelope) Less(f *Envelope) bool {
	if e.Stamp != f.Stamp {
		return e.Stamp < f.Stamp
	}
	return string(e.MessageID[:]) < string(f.MessageID[:])
}

// Tombstone is what an expired envelope leaves behind until the device fetches: enough for the client to say
// what it missed and from whom, and nothing of the content.
type Tombstone struct {
	MessageID wire.MessageID
	Sender    wire.DeviceID
	Stamp     int64     // the envelope's stamp (when it was sent)
	Expired   time.Time // when it expired
	Reason    string    // ReasonTTL or ReasonCount
}

// Expiry reasons of a Tombstone.
const (
	ReasonTTL   = "ttl"   // older than the TTL
	ReasonCount = "count" // pushed out by the count limit, oldest first
)

// DeleteMark records that a message was deleted (acknowledged) from a mailbox, so that anti-entropy never
// brings it back.
type DeleteMark struct {
	MessageID wire.MessageID
	Time      time.Time
}

// Summary is what a replica holds for one mailbox, as anti-entropy compares it.
type Summary struct {
	IDs        []wire.MessageID // envelopes held
	Tombstoned []wire.MessageID // expired here
	Deleted    []DeleteMark     // deleted, still remembered
}

// Datastore layout, below the namespace the Store is given:
//
//	/e/<device>/<stamp:16 hex><message id:32 hex>  envelope record, in delivery order
//	/i/<device>/<message id>                       index of a held envelope: stamp, sender, ciphertext size (48 bytes;
//	                                               8 bytes, the stamp alone, when written by an older version)
//	/t/<device>/<message id>                       tombstone record
//	/d/<device>/<message id>                       delete mark: Unix nanoseconds (8 bytes)
//	/s/<device>/<sender>                           envelopes held from that sender (8 bytes)
//	/m/<device>                                    counters: envelopes, bytes, tombstones, marks (32 bytes)
//	/r/<device>                                    revoked at: Unix nanoseconds (8 bytes)
const (
	pEnv    = "/e/"
	pIndex  = "/i/"
	pTomb   = "/t/"
	pDel    = "/d/"
	pSender = "/s/"
	pMeta   = "/m/"
	pRevoke = "/r/"
)

// Store keeps mailboxes in a datastore. Every change is one batch, synced to disk before the method returns.
// Changes to one mailbox are serialised; different mailboxes proceed in parallel.
type Store struct {
	d     ds.Batching
	lim   Limits
	locks [64]sync.Mutex
	// The hints of the fetches under way (hints.go), by device, and how many they hold in all.
	hmu      sync.Mutex
	watching map[wire.DeviceID]map[*hints]struct{}
	hinted   atomic.Int64
	// countExpired, if set, is told how many envelopes a put pushed out by the count limit.
	countExpired func(n int)
}

// NewStore returns a Store over d, which should be a namespace of its own (e.g. /mailbox of the node's
// datastore). Zero limits take their defaults.
func NewStore(d ds.Batching, lim Limits) *Store {
	return &Store{d: d, lim: lim.withDefaults(), watching: make(map[wire.DeviceID]map[*hints]struct{})}
}

func (s *Store) lock(dev wire.DeviceID) func() {
	m := &s.locks[int(dev[0])%len(s.locks)]
	m.Lock()
	return m.Unlock
}

func devHex(d wire.DeviceID) string { return hex.EncodeToString(d[:]) }

func envKey(dev wire.DeviceID, stamp int64, id wire.MessageID) ds.Key {
	return ds.RawKey(fmt.Sprintf("%s%s/%016x%x", pEnv, devHex(dev), uint64(stamp), id[:]))
}

func idKey(prefix string, dev wire.DeviceID, id wire.MessageID) ds.Key {
	return ds.RawKey(prefix + devHex(dev) + "/" + hex.EncodeToString(id[:]))
}

func senderKey(dev, sender wire.DeviceID) ds.Key {
	return ds.RawKey(pSender + devHex(dev) + "/" + devHex(sender))
}

func metaKey(dev wire.DeviceID) ds.Key   { return ds.RawKey(pMeta + devHex(dev)) }
func revokeKey(dev wire.DeviceID) ds.Key { return ds.RawKey(pRevoke + devHex(dev)) }

// parseEnvKey reads the stamp and message ID out of the last segment of an envelope key.
func parseEnvKey(k string) (int64, wire.MessageID, error) {
	var id wire.MessageID
	i := strings.LastIndexByte(k, '/')
	seg := k[i+1:]
	if len(seg) != 16+2*wire.MessageIDSize {
		return 0, id, fmt.Errorf("mailbox: store: bad envelope key %q", k)
	}
	var st [8]byte
	if _, err := hex.Decode(st[:], []byte(seg[:16])); err != nil {
		return 0, id, fmt.Errorf("mailbox: store: bad envelope key %q", k)
	}
	if _, err := hex.Decode(id[:], []byte(seg[16:])); err != nil {
		return 0, id, fmt.Errorf("mailbox: store: bad envelope key %q", k)
	}
	return int64(binary.BigEndian.Uint64(st[:])), id, nil
}

func parseIDSegment(k string) (wire.MessageID, error) {
	var id wire.MessageID
	seg := k[strings.LastIndexByte(k, '/')+1:]
	if len(seg) != 2*wire.MessageIDSize {
		return id, fmt.Errorf("mailbox: store: bad key %q", k)
	}
	_, err := hex.Decode(id[:], []byte(seg))
	return id, err
}

// held is what the index keeps of a held envelope: enough to find its record, remove it and keep the counters
// right without reading the record. Deleting an acknowledged envelope so costs at most one small read (none
// with the hints of the fetch that streamed it, hints.go); reading each record back (up to 64 KiB, from
// sstables and past the block cache once the mailbox outgrows them) made acknowledging 10,000 envelopes
// several times slower per envelope than 1,000 (see BenchmarkStoreThenFetch).
type held struct {
	MessageID wire.MessageID
	Sender    wire.DeviceID
	Stamp     int64
	Size      int64 // ciphertext bytes
}

func heldOf(e *Envelope) held {
	return held{MessageID: e.MessageID, Sender: e.Sender, Stamp: e.Stamp, Size: int64(len(e.Ciphertext))}
}

const (
	indexLen    = 8 + wire.DeviceIDSize + 8
	oldIndexLen = 8 // the stamp alone
)

func (h held) encodeIndex() []byte {
	b := make([]byte, 0, indexLen)
	b = binary.BigEndian.AppendUint64(b, uint64(h.Stamp))
	b = append(b, h.Sender[:]...)
	return binary.BigEndian.AppendUint64(b, uint64(h.Size))
}

// decodeIndex decodes the index entry of envelope id. full is false for the older 8-byte form, which holds the
// stamp alone.
func decodeIndex(id wire.MessageID, b []byte) (h held, full bool, err error) {
	if len(b) != indexLen && len(b) != oldIndexLen {
		return held{}, false, fmt.Errorf("index entry of %d bytes", len(b))
	}
	h = held{MessageID: id, Stamp: int64(binary.BigEndian.Uint64(b))}
	if h.Stamp <= 0 {
		return held{}, false, fmt.Errorf("index entry with stamp %d", h.Stamp)
	}
	if len(b) == oldIndexLen {
		return h, false, nil
	}
	copy(h.Sender[:], b[8:])
	h.Size = int64(binary.BigEndian.Uint64(b[8+wire.DeviceIDSize:]))
	if h.Size <= 0 {
		return held{}, false, fmt.Errorf("index entry with size %d", h.Size)
	}
	return h, true, nil
}

// readIndex returns dev's index entry of envelope id, decoded; ok is false if no such envelope is held.
func (s *Store) readIndex(ctx context.Context, dev wire.DeviceID, id wire.MessageID) (h held, full, ok bool, err error) {
	k := idKey(pIndex, dev, id)
	b, err := s.d.Get(ctx, k)
	if errors.Is(err, ds.ErrNotFound) {
		return held{}, false, false, nil
	}
	if err != nil {
		return held{}, false, false, err
	}
	h, full, err = decodeIndex(id, b)
	if err != nil {
		return held{}, false, false, fmt.Errorf("mailbox: store: corrupt %s: %w", k, err)
	}
	return h, full, true, nil
}

// lookup returns what the index holds of dev's envelope id. For an entry of the older form, the rest is read
// from the record.
func (s *Store) lookup(ctx context.Context, dev wire.DeviceID, id wire.MessageID) (held, bool, error) {
	h, full, ok, err := s.readIndex(ctx, dev, id)
	if err != nil || !ok || full {
		return h, ok, err
	}
	e, err := s.record(ctx, dev, h.Stamp, id)
	if err != nil {
		return held{}, false, err
	}
	return heldOf(&e), true, nil
}

// record reads and decodes one envelope record.
func (s *Store) record(ctx context.Context, dev wire.DeviceID, stamp int64, id wire.MessageID) (Envelope, error) {
	b, err := s.d.Get(ctx, envKey(dev, stamp, id))
	if err != nil {
		return Envelope{}, err
	}
	return decodeEnvelope(b)
}

// meta holds a mailbox's counters.
type meta struct {
	count, bytes, tombs, marks int64
}

func (m meta) empty() bool { return m.count == 0 && m.tombs == 0 && m.marks == 0 }

func (m meta) encode() []byte {
	b := make([]byte, 32)
	binary.BigEndian.PutUint64(b[0:], uint64(m.count))
	binary.BigEndian.PutUint64(b[8:], uint64(m.bytes))
	binary.BigEndian.PutUint64(b[16:], uint64(m.tombs))
	binary.BigEndian.PutUint64(b[24:], uint64(m.marks))
	return b
}

func (s *Store) getMeta(ctx context.Context, dev wire.DeviceID) (meta, error) {
	b, err := s.d.Get(ctx, metaKey(dev))
	if errors.Is(err, ds.ErrNotFound) {
		return meta{}, nil
	}
	if err != nil {
		return meta{}, err
	}
	if len(b) != 32 {
		return meta{}, fmt.Errorf("mailbox: store: corrupt counters for %s", devHex(dev))
	}
	return meta{
		count: int64(binary.BigEndian.Uint64(b[0:])), bytes: int64(binary.BigEndian.Uint64(b[8:])),
		tombs: int64(binary.BigEndian.Uint64(b[16:])), marks: int64(binary.BigEndian.Uint64(b[24:])),
	}, nil
}

func (s *Store) getUint(ctx context.Context, k ds.Key) (uint64, bool, error) {
	b, err := s.d.Get(ctx, k)
	if errors.Is(err, ds.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	if len(b) != 8 {
		return 0, false, fmt.Errorf("mailbox: store: corrupt value at %s", k)
	}
	return binary.BigEndian.Uint64(b), true, nil
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// change is one mailbox's pending batch plus the counter deltas it implies.
type change struct {
	s       *Store
	dev     wire.DeviceID
	b       ds.Batch
	m       meta
	senders map[wire.DeviceID]int64 // new per-sender counts
}

func (s *Store) begin(ctx context.Context, dev wire.DeviceID) (*change, error) {
	b, err := s.d.Batch(ctx)
	if err != nil {
		return nil, err
	}
	m, err := s.getMeta(ctx, dev)
	if err != nil {
		return nil, err
	}
	return &change{s: s, dev: dev, b: b, m: m, senders: make(map[wire.DeviceID]int64)}, nil
}

func (c *change) senderCount(ctx context.Context, sender wire.DeviceID) (int64, error) {
	if n, ok := c.senders[sender]; ok {
		return n, nil
	}
	n, _, err := c.s.getUint(ctx, senderKey(c.dev, sender))
	if err != nil {
		return 0, err
	}
	c.senders[sender] = int64(n)
	return int64(n), nil
}

func (c *change) addSender(ctx context.Context, sender wire.DeviceID, delta int64) error {
	n, err := c.senderCount(ctx, sender)
	if err != nil {
		return err
	}
	c.senders[sender] = max(n+delta, 0)
	return nil
}

// commit writes the batch with the counters and syncs it to disk.
func (c *change) commit(ctx context.Context) error {
	for sender, n := range c.senders {
		if n == 0 {
			if err := c.b.Delete(ctx, senderKey(c.dev, sender)); err != nil {
				return err
			}
		} else if err := c.b.Put(ctx, senderKey(c.dev, sender), u64(uint64(n))); err != nil {
			return err
		}
	}
	var err error
	if c.m.empty() {
		err = c.b.Delete(ctx, metaKey(c.dev))
	} else {
		err = c.b.Put(ctx, metaKey(c.dev), c.m.encode())
	}
	if err != nil {
		return err
	}
	if err := c.b.Commit(ctx); err != nil {
		return err
	}
	// The datastore may write without syncing (Pebble's NoSync); Sync makes this batch durable before anyone
	// is told it is stored.
	return c.s.d.Sync(ctx, ds.RawKey("/"))
}

// removeEnvelope deletes a held envelope (its record and index entry) inside the change.
func (c *change) removeEnvelope(ctx context.Context, h *held) error {
	if err := c.b.Delete(ctx, envKey(c.dev, h.Stamp, h.MessageID)); err != nil {
		return err
	}
	if err := c.b.Delete(ctx, idKey(pIndex, c.dev, h.MessageID)); err != nil {
		return err
	}
	c.s.forget(c.dev, h)
	c.m.count--
	c.m.bytes -= h.Size
	return c.addSender(ctx, h.Sender, -1)
}

func (c *change) addTombstone(ctx context.Context, h *held, now time.Time, reason string) error {
	if c.m.tombs >= int64(c.s.lim.MaxTombstones) {
		return nil
	}
	t := Tombstone{MessageID: h.MessageID, Sender: h.Sender, Stamp: h.Stamp, Expired: now, Reason: reason}
	if err := c.b.Put(ctx, idKey(pTomb, c.dev, h.MessageID), encodeTombstone(&t)); err != nil {
		return err
	}
	c.m.tombs++
	return nil
}

// PutKind says what a Store.Put did.
type PutKind int

// Outcomes of Put that are not errors.
const (
	Written   PutKind = iota + 1 // written now
	Duplicate                    // already held: nothing written
	Delivered                    // already deleted by the device (acknowledged): nothing written
)

// Put stores e in its recipient's mailbox and syncs it to disk. It refuses an envelope over the size limit
// (ErrTooLarge), one older than the TTL or already expired here (ErrExpired), one stamped too far in the future
// (ErrMalformed), one past the sender's quota (ErrSenderQuota) or the mailbox's byte quota (ErrMailboxFull), and
// any for a revoked device (ErrRevoked). When the mailbox is at its count limit the oldest envelope expires and
// leaves a tombstone.
func (s *Store) Put(ctx context.Context, e *Envelope, now time.Time) (PutKind, error) {
	dev := e.Recipient
	if len(e.Ciphertext) == 0 {
		return 0, errorf(StatusMalformed, "empty ciphertext")
	}
	if len(e.Ciphertext) > s.lim.MaxEnvelopeBytes {
		return 0, errorf(StatusTooLarge, "ciphertext of %d bytes exceeds %d", len(e.Ciphertext), s.lim.MaxEnvelopeBytes)
	}
	if e.Stamp <= 0 || e.Stamp > now.Add(s.lim.MaxClockSkew).UnixNano() {
		return 0, errorf(StatusMalformed, "stamp %d outside the clock skew", e.Stamp)
	}
	if time.Unix(0, e.Stamp).Add(s.lim.TTL).Compare(now) <= 0 {
		return 0, errorf(StatusExpired, "envelope older than the TTL")
	}
	defer s.lock(dev)()
	if ok, err := s.d.Has(ctx, revokeKey(dev)); err != nil {
		return 0, fmt.Errorf("mailbox: put: %w", err)
	} else if ok {
		return 0, errorf(StatusRevoked, "device %s is revoked", devHex(dev))
	}
	for _, k := range []struct {
		prefix string
		res    PutKind
	}{{pIndex, Duplicate}, {pDel, Delivered}, {pTomb, 0}} {
		ok, err := s.d.Has(ctx, idKey(k.prefix, dev, e.MessageID))
		if err != nil {
			return 0, fmt.Errorf("mailbox: put: %w", err)
		}
		if ok && k.res == 0 {
			return 0, errorf(StatusExpired, "message expired here")
		}
		if ok {
			return k.res, nil
		}
	}
	c, err := s.begin(ctx, dev)
	if err != nil {
		return 0, fmt.Errorf("mailbox: put: %w", err)
	}
	n, err := c.senderCount(ctx, e.Sender)
	if err != nil {
		return 0, fmt.Errorf("mailbox: put: %w", err)
	}
	if n >= int64(s.lim.MaxPerSender) {
		return 0, errorf(StatusSenderQuota, "sender has %d envelopes waiting (limit %d)", n, s.lim.MaxPerSender)
	}
	if c.m.bytes+int64(len(e.Ciphertext)) > s.lim.MaxMailboxBytes {
		return 0, errorf(StatusMailboxFull, "mailbox holds %d bytes (limit %d)", c.m.bytes, s.lim.MaxMailboxBytes)
	}
	evicted := 0
	if excess := c.m.count + 1 - int64(s.lim.MaxCount); excess > 0 {
		oldest, err := s.oldest(ctx, dev, int(excess))
		if err != nil {
			return 0, fmt.Errorf("mailbox: put: %w", err)
		}
		if len(oldest) > 0 && e.Less(&oldest[0]) {
			// The newcomer is older than everything held: it is the one the count limit pushes out.
			h := heldOf(e)
			if err := c.addTombstone(ctx, &h, now, ReasonCount); err != nil {
				return 0, fmt.Errorf("mailbox: put: %w", err)
			}
			if err := c.commit(ctx); err != nil {
				return 0, fmt.Errorf("mailbox: put: %w", err)
			}
			return 0, errorf(StatusExpired, "older than every envelope of a full mailbox")
		}
		for i := range oldest {
			h := heldOf(&oldest[i])
			if err := c.removeEnvelope(ctx, &h); err != nil {
				return 0, fmt.Errorf("mailbox: put: %w", err)
			}
			if err := c.addTombstone(ctx, &h, now, ReasonCount); err != nil {
				return 0, fmt.Errorf("mailbox: put: %w", err)
			}
			evicted++
		}
	}
	if err := c.b.Put(ctx, envKey(dev, e.Stamp, e.MessageID), encodeEnvelope(e)); err != nil {
		return 0, fmt.Errorf("mailbox: put: %w", err)
	}
	if err := c.b.Put(ctx, idKey(pIndex, dev, e.MessageID), heldOf(e).encodeIndex()); err != nil {
		return 0, fmt.Errorf("mailbox: put: %w", err)
	}
	c.m.count++
	c.m.bytes += int64(len(e.Ciphertext))
	if err := c.addSender(ctx, e.Sender, 1); err != nil {
		return 0, fmt.Errorf("mailbox: put: %w", err)
	}
	if err := c.commit(ctx); err != nil {
		return 0, fmt.Errorf("mailbox: put: %w", err)
	}
	if evicted > 0 && s.countExpired != nil {
		s.countExpired(evicted)
	}
	return Written, nil
}

// oldest returns up to n of dev's envelopes in delivery order.
func (s *Store) oldest(ctx context.Context, dev wire.DeviceID, n int) ([]Envelope, error) {
	var out []Envelope
	err := s.iterate(ctx, dev, n, func(e *Envelope) error {
		out = append(out, *e)
		return nil
	})
	return out, err
}

// Iterate calls fn with dev's envelopes in delivery order; fn must not keep e. It stops at fn's first error
// and returns it.
func (s *Store) Iterate(ctx context.Context, dev wire.DeviceID, fn func(e *Envelope) error) error {
	return s.iterate(ctx, dev, 0, fn)
}

func (s *Store) iterate(ctx context.Context, dev wire.DeviceID, limit int, fn func(e *Envelope) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	res, err := s.d.Query(ctx, query.Query{
		Prefix: pEnv + devHex(dev),
		Orders: []query.Order{query.OrderByKey{}},
		Limit:  limit,
	})
	if err != nil {
		return fmt.Errorf("mailbox: iterate: %w", err)
	}
	defer res.Close()
	for r := range res.Next() {
		if r.Error != nil {
			return fmt.Errorf("mailbox: iterate: %w", r.Error)
		}
		e, err := decodeEnvelope(r.Value)
		if err != nil {
			return fmt.Errorf("mailbox: iterate %s: %w", r.Key, err)
		}
		if err := fn(&e); err != nil {
			return err
		}
	}
	return nil
}

// Get returns one held envelope.
func (s *Store) Get(ctx context.Context, dev wire.DeviceID, id wire.MessageID) (Envelope, bool, error) {
	h, _, ok, err := s.readIndex(ctx, dev, id)
	if err != nil || !ok {
		return Envelope{}, false, err
	}
	e, err := s.record(ctx, dev, h.Stamp, id)
	if err != nil {
		return Envelope{}, false, fmt.Errorf("mailbox: get: %w", err)
	}
	return e, true, nil
}

// Count returns how many envelopes dev's mailbox holds.
func (s *Store) Count(ctx context.Context, dev wire.DeviceID) (int, error) {
	m, err := s.getMeta(ctx, dev)
	return int(m.count), err
}

// Tombstones returns dev's tombstones.
func (s *Store) Tombstones(ctx context.Context, dev wire.DeviceID) ([]Tombstone, error) {
	res, err := s.d.Query(ctx, query.Query{Prefix: pTomb + devHex(dev)})
	if err != nil {
		return nil, fmt.Errorf("mailbox: tombstones: %w", err)
	}
	entries, err := res.Rest()
	if err != nil {
		return nil, fmt.Errorf("mailbox: tombstones: %w", err)
	}
	out := make([]Tombstone, 0, len(entries))
	for _, en := range entries {
		t, err := decodeTombstone(en.Value)
		if err != nil {
			return nil, fmt.Errorf("mailbox: tombstones: %w", err)
		}
		out = append(out, t)
	}
	return out, nil
}

// Delete removes the given envelopes and tombstones from dev's mailbox and remembers a delete mark for each
// ID, so that a copy on another replica cannot come back. It returns how many envelopes it removed.
func (s *Store) Delete(ctx context.Context, dev wire.DeviceID, ids []wire.MessageID, now time.Time) (int, error) {
	return s.applyDeletes(ctx, dev, marksAt(ids, now), now, nil)
}

func marksAt(ids []wire.MessageID, now time.Time) []DeleteMark {
	marks := make([]DeleteMark, len(ids))
	for i, id := range ids {
		marks[i] = DeleteMark{MessageID: id, Time: now}
	}
	return marks
}

// ApplyDeletes is Delete with the marks' own times (as anti-entropy passes them on). Marks older than the
// delete-mark TTL are ignored.
func (s *Store) ApplyDeletes(ctx context.Context, dev wire.DeviceID, marks []DeleteMark, now time.Time) (int, error) {
	return s.applyDeletes(ctx, dev, marks, now, nil)
}

// applyDeletes is ApplyDeletes that takes what it can from the hints of the fetch being acknowledged (w may be
// nil) instead of reading the index.
func (s *Store) applyDeletes(ctx context.Context, dev wire.DeviceID, marks []DeleteMark, now time.Time, w *hints) (int, error) {
	if len(marks) == 0 {
		return 0, nil
	}
	defer s.lock(dev)()
	c, err := s.begin(ctx, dev)
	if err != nil {
		return 0, fmt.Errorf("mailbox: delete: %w", err)
	}
	removed := 0
	// The batch is read from the committed state: an ID named twice would be removed and counted twice.
	done := make(map[wire.MessageID]struct{}, len(marks))
	for _, mk := range marks {
		if mk.Time.Add(s.lim.DeleteMarkTTL).Before(now) {
			continue
		}
		if _, ok := done[mk.MessageID]; ok {
			continue
		}
		done[mk.MessageID] = struct{}{}
		var h held
		var isHeld bool
		if w != nil {
			h, isHeld = w.take(mk.MessageID)
		}
		if !isHeld {
			var err error
			if h, isHeld, err = s.lookup(ctx, dev, mk.MessageID); err != nil {
				return 0, fmt.Errorf("mailbox: delete: %w", err)
			}
		}
		if isHeld {
			if err := c.removeEnvelope(ctx, &h); err != nil {
				return 0, fmt.Errorf("mailbox: delete: %w", err)
			}
			removed++
		}
		// Each point lookup below costs as much as an index read once the mailbox is larger than Pebble's
		// caches, so skip those whose answer is known: no tombstone when the counters say there is none, and
		// no delete mark for a held envelope (Put refuses a marked ID, and a mark removes the envelope it names
		// in the same batch).
		if c.m.tombs > 0 {
			tk := idKey(pTomb, dev, mk.MessageID)
			if had, err := s.d.Has(ctx, tk); err != nil {
				return 0, fmt.Errorf("mailbox: delete: %w", err)
			} else if had {
				if err := c.b.Delete(ctx, tk); err != nil {
					return 0, fmt.Errorf("mailbox: delete: %w", err)
				}
				c.m.tombs--
			}
		}
		dk := idKey(pDel, dev, mk.MessageID)
		if isHeld {
			c.m.marks++
		} else if had, err := s.d.Has(ctx, dk); err != nil {
			return 0, fmt.Errorf("mailbox: delete: %w", err)
		} else if !had {
			c.m.marks++
		}
		if err := c.b.Put(ctx, dk, u64(uint64(mk.Time.UnixNano()))); err != nil {
			return 0, fmt.Errorf("mailbox: delete: %w", err)
		}
	}
	if err := c.commit(ctx); err != nil {
		return 0, fmt.Errorf("mailbox: delete: %w", err)
	}
	return removed, nil
}

// Summary returns what dev's mailbox holds, for anti-entropy.
func (s *Store) Summary(ctx context.Context, dev wire.DeviceID) (Summary, error) {
	var sum Summary
	for _, p := range []string{pIndex, pTomb, pDel} {
		res, err := s.d.Query(ctx, query.Query{Prefix: p + devHex(dev), KeysOnly: p != pDel})
		if err != nil {
			return sum, fmt.Errorf("mailbox: summary: %w", err)
		}
		entries, err := res.Rest()
		if err != nil {
			return sum, fmt.Errorf("mailbox: summary: %w", err)
		}
		for _, en := range entries {
			id, err := parseIDSegment(en.Key)
			if err != nil {
				return sum, err
			}
			switch p {
			case pIndex:
				sum.IDs = append(sum.IDs, id)
			case pTomb:
				sum.Tombstoned = append(sum.Tombstoned, id)
			case pDel:
				if len(en.Value) != 8 {
					return sum, fmt.Errorf("mailbox: summary: corrupt delete mark %s", en.Key)
				}
				sum.Deleted = append(sum.Deleted, DeleteMark{MessageID: id,
					Time: time.Unix(0, int64(binary.BigEndian.Uint64(en.Value)))})
			}
		}
	}
	return sum, nil
}

// Devices returns every device this store holds anything for (envelopes, tombstones or delete marks).
func (s *Store) Devices(ctx context.Context) ([]wire.DeviceID, error) {
	res, err := s.d.Query(ctx, query.Query{Prefix: pMeta, KeysOnly: true})
	if err != nil {
		return nil, fmt.Errorf("mailbox: devices: %w", err)
	}
	entries, err := res.Rest()
	if err != nil {
		return nil, fmt.Errorf("mailbox: devices: %w", err)
	}
	out := make([]wire.DeviceID, 0, len(entries))
	for _, en := range entries {
		var d wire.DeviceID
		seg := en.Key[strings.LastIndexByte(en.Key, '/')+1:]
		if len(seg) != 2*wire.DeviceIDSize {
			continue
		}
		if _, err := hex.Decode(d[:], []byte(seg)); err != nil {
			continue
		}
		out = append(out, d)
	}
	return out, nil
}

// ExpireResult counts what one expiry sweep did.
type ExpireResult struct {
	Expired      int // envelopes that expired by TTL
	MarksDropped int // delete marks forgotten after DeleteMarkTTL
}

// Expire expires every envelope older than the TTL (leaving a tombstone) and forgets delete marks older than
// the delete-mark TTL, in every mailbox.
func (s *Store) Expire(ctx context.Context, now time.Time) (ExpireResult, error) {
	var total ExpireResult
	devs, err := s.Devices(ctx)
	if err != nil {
		return total, err
	}
	for _, dev := range devs {
		r, err := s.expireDevice(ctx, dev, now)
		total.Expired += r.Expired
		total.MarksDropped += r.MarksDropped
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func (s *Store) expireDevice(ctx context.Context, dev wire.DeviceID, now time.Time) (ExpireResult, error) {
	var r ExpireResult
	cutoff := now.Add(-s.lim.TTL).UnixNano()
	defer s.lock(dev)()
	var old []held // not whole envelopes: memory stays flat
	errStop := errors.New("stop")
	err := s.iterate(ctx, dev, 0, func(e *Envelope) error {
		if e.Stamp > cutoff {
			return errStop // delivery order is stamp order: the rest are younger
		}
		old = append(old, heldOf(e))
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return r, err
	}
	res, err := s.d.Query(ctx, query.Query{Prefix: pDel + devHex(dev)})
	if err != nil {
		return r, fmt.Errorf("mailbox: expire: %w", err)
	}
	marks, err := res.Rest()
	if err != nil {
		return r, fmt.Errorf("mailbox: expire: %w", err)
	}
	if len(old) == 0 && len(marks) == 0 {
		return r, nil
	}
	c, err := s.begin(ctx, dev)
	if err != nil {
		return r, fmt.Errorf("mailbox: expire: %w", err)
	}
	for i := range old {
		if err := c.removeEnvelope(ctx, &old[i]); err != nil {
			return r, fmt.Errorf("mailbox: expire: %w", err)
		}
		if err := c.addTombstone(ctx, &old[i], now, ReasonTTL); err != nil {
			return r, fmt.Errorf("mailbox: expire: %w", err)
		}
		r.Expired++
	}
	for _, en := range marks {
		if len(en.Value) == 8 && time.Unix(0, int64(binary.BigEndian.Uint64(en.Value))).Add(s.lim.DeleteMarkTTL).After(now) {
			continue
		}
		if err := c.b.Delete(ctx, ds.RawKey(en.Key)); err != nil {
			return r, fmt.Errorf("mailbox: expire: %w", err)
		}
		c.m.marks--
		r.MarksDropped++
	}
	if err := c.commit(ctx); err != nil {
		return r, fmt.Errorf("mailbox: expire: %w", err)
	}
	return r, nil
}

// Drop deletes everything held for dev and refuses its envelopes from now on (the device was revoked).
func (s *Store) Drop(ctx context.Context, dev wire.DeviceID, now time.Time) error {
	defer s.lock(dev)()
	s.forgetAll(dev)
	b, err := s.d.Batch(ctx)
	if err != nil {
		return fmt.Errorf("mailbox: drop: %w", err)
	}
	for _, p := range []string{pEnv, pIndex, pTomb, pDel, pSender} {
		res, err := s.d.Query(ctx, query.Query{Prefix: p + devHex(dev), KeysOnly: true})
		if err != nil {
			return fmt.Errorf("mailbox: drop: %w", err)
		}
		entries, err := res.Rest()
		if err != nil {
			return fmt.Errorf("mailbox: drop: %w", err)
		}
		for _, en := range entries {
			if err := b.Delete(ctx, ds.RawKey(en.Key)); err != nil {
				return fmt.Errorf("mailbox: drop: %w", err)
			}
		}
	}
	if err := b.Delete(ctx, metaKey(dev)); err != nil {
		return fmt.Errorf("mailbox: drop: %w", err)
	}
	if err := b.Put(ctx, revokeKey(dev), u64(uint64(now.UnixNano()))); err != nil {
		return fmt.Errorf("mailbox: drop: %w", err)
	}
	if err := b.Commit(ctx); err != nil {
		return fmt.Errorf("mailbox: drop: %w", err)
	}
	return s.d.Sync(ctx, ds.RawKey("/"))
}

// Revoked reports whether dev was dropped as revoked.
func (s *Store) Revoked(ctx context.Context, dev wire.DeviceID) (bool, error) {
	return s.d.Has(ctx, revokeKey(dev))
}
