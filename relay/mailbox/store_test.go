package mailbox

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/namespace"
	pebbleds "github.com/ipfs/go-ds-pebble"

	"github.com/iagon/gridchat/wire"
)

// openPebble opens a real Pebble datastore in dir, closed at the end of the test unless the caller closes it.
func openPebble(t testing.TB, dir string) *pebbleds.Datastore {
	t.Helper()
	d, err := pebbleds.NewDatastore(filepath.Join(dir, "ds"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func newTestStore(t testing.TB, lim Limits) *Store {
	return NewStore(namespace.Wrap(openPebble(t, t.TempDir()), ds.NewKey("/mailbox")), lim)
}

func randDevice(t testing.TB) wire.DeviceID {
	var d wire.DeviceID
	if _, err := rand.Read(d[:]); err != nil {
		t.Fatal(err)
	}
	return d
}

func msgID(i int) wire.MessageID {
	var m wire.MessageID
	copy(m[:], fmt.Sprintf("m%015d", i))
	return m
}

func env(to, from wire.DeviceID, i int, stamp time.Time) *Envelope {
	return &Envelope{MessageID: msgID(i), Sender: from, Recipient: to, Stamp: stamp.UnixNano(),
		Ciphertext: []byte(fmt.Sprintf("ciphertext %d", i))}
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestStoreKeepsEnvelopesAcrossRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d := openPebble(t, dir)
	s := NewStore(namespace.Wrap(d, ds.NewKey("/mailbox")), Limits{})
	to, from := randDevice(t), randDevice(t)
	for i := range 10 {
		if res, err := s.Put(ctx, env(to, from, i, t0.Add(time.Duration(i)*time.Second)), t0.Add(time.Minute)); err != nil || res != Written {
			t.Fatalf("put %d: %v %v", i, res, err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	s = NewStore(namespace.Wrap(openPebble(t, dir), ds.NewKey("/mailbox")), Limits{})
	var got []int
	err := s.Iterate(ctx, to, func(e *Envelope) error {
		var i int
		fmt.Sscanf(string(e.Ciphertext), "ciphertext %d", &i)
		got = append(got, i)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[0 1 2 3 4 5 6 7 8 9]" {
		t.Fatalf("after restart, got %v", got)
	}
}

func TestStoreOrdersByStampThenMessageID(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, Limits{})
	to, from := randDevice(t), randDevice(t)
	// Put in reverse order; delivery order is by stamp.
	for i := 9; i >= 0; i-- {
		if _, err := s.Put(ctx, env(to, from, i, t0.Add(time.Duration(i)*time.Millisecond)), t0); err != nil {
			t.Fatal(err)
		}
	}
	prev := -1
	_ = s.Iterate(ctx, to, func(e *Envelope) error {
		var i int
		fmt.Sscanf(string(e.Ciphertext), "ciphertext %d", &i)
		if i != prev+1 {
			t.Errorf("got %d after %d", i, prev)
		}
		prev = i
		return nil
	})
}

func TestStoreDuplicatePutIsIdempotent(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, Limits{})
	to, from := randDevice(t), randDevice(t)
	e := env(to, from, 1, t0)
	if r, err := s.Put(ctx, e, t0); err != nil || r != Written {
		t.Fatal(r, err)
	}
	if r, err := s.Put(ctx, e, t0); err != nil || r != Duplicate {
		t.Fatalf("second put: %v %v", r, err)
	}
	if n, _ := s.Count(ctx, to); n != 1 {
		t.Fatalf("count %d", n)
	}
	if _, err := s.Delete(ctx, to, []wire.MessageID{e.MessageID}, t0); err != nil {
		t.Fatal(err)
	}
	if r, err := s.Put(ctx, e, t0); err != nil || r != Delivered {
		t.Fatalf("put after delete: %v %v", r, err)
	}
	if n, _ := s.Count(ctx, to); n != 0 {
		t.Fatalf("an acknowledged envelope came back: count %d", n)
	}
}

func TestStoreTTLExpiryLeavesTombstones(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, Limits{TTL: time.Hour})
	to, a, b := randDevice(t), randDevice(t), randDevice(t)
	for i := range 5 {
		if _, err := s.Put(ctx, env(to, a, i, t0.Add(time.Duration(i)*time.Minute)), t0.Add(5*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Put(ctx, env(to, b, 100, t0.Add(40*time.Minute)), t0.Add(40*time.Minute)); err != nil {
		t.Fatal(err)
	}
	// At t0+1h02m, envelopes 0, 1 and 2 (stamped t0, +1m, +2m) are older than the TTL.
	res, err := s.Expire(ctx, t0.Add(time.Hour+2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if res.Expired != 3 {
		t.Fatalf("expired %d, want 3", res.Expired)
	}
	if n, _ := s.Count(ctx, to); n != 3 {
		t.Fatalf("count %d, want 3", n)
	}
	ts, err := s.Tombstones(ctx, to)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 3 {
		t.Fatalf("%d tombstones, want 3", len(ts))
	}
	for _, tb := range ts {
		if tb.Sender != a || tb.Reason != ReasonTTL {
			t.Fatalf("tombstone %+v", tb)
		}
	}
	// An envelope older than the TTL is refused outright, and an expired one is not taken back.
	if _, err := s.Put(ctx, env(to, a, 7, t0), t0.Add(2*time.Hour)); !errors.Is(err, ErrExpired) {
		t.Fatalf("put of an old envelope: %v", err)
	}
	if _, err := s.Put(ctx, env(to, a, 0, t0.Add(time.Hour)), t0.Add(time.Hour+3*time.Minute)); !errors.Is(err, ErrExpired) {
		t.Fatalf("put of an expired message again: %v", err)
	}
	// Deleting (acknowledging) the tombstones removes them.
	if _, err := s.Delete(ctx, to, []wire.MessageID{ts[0].MessageID, ts[1].MessageID, ts[2].MessageID}, t0.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if ts, _ := s.Tombstones(ctx, to); len(ts) != 0 {
		t.Fatalf("%d tombstones after delete", len(ts))
	}
}

func TestStoreCountLimitExpiresOldestFirst(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, Limits{MaxCount: 5})
	to, from := randDevice(t), randDevice(t)
	for i := range 8 {
		if _, err := s.Put(ctx, env(to, from, i, t0.Add(time.Duration(i)*time.Second)), t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := s.Count(ctx, to); n != 5 {
		t.Fatalf("count %d, want 5", n)
	}
	var first wire.MessageID
	_ = s.Iterate(ctx, to, func(e *Envelope) error {
		if first == (wire.MessageID{}) {
			first = e.MessageID
		}
		return nil
	})
	if first != msgID(3) {
		t.Fatalf("oldest kept is %q, want m3", first)
	}
	ts, _ := s.Tombstones(ctx, to)
	if len(ts) != 3 {
		t.Fatalf("%d tombstones, want 3", len(ts))
	}
	for _, tb := range ts {
		if tb.Reason != ReasonCount || tb.Sender != from {
			t.Fatalf("tombstone %+v", tb)
		}
	}
}

func TestStoreQuotasRefuseTheExcess(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, Limits{MaxPerSender: 3, MaxMailboxBytes: 100, MaxEnvelopeBytes: 40})
	to, a, b := randDevice(t), randDevice(t), randDevice(t)
	for i := range 3 {
		if _, err := s.Put(ctx, env(to, a, i, t0), t0); err != nil {
			t.Fatal(err)
		}
	}
	_, err := s.Put(ctx, env(to, a, 3, t0), t0)
	if !errors.Is(err, ErrSenderQuota) {
		t.Fatalf("4th from one sender: %v", err)
	}
	var me *Error
	if !errors.As(err, &me) || me.Status != StatusSenderQuota || me.Status.String() != "sender_quota" {
		t.Fatalf("status %v", err)
	}
	// Another sender may still put, until the mailbox's bytes run out (3×12 bytes held, 100 allowed).
	for i := 10; i < 20; i++ {
		_, err = s.Put(ctx, env(to, randDevice(t), i, t0), t0)
		if err != nil {
			break
		}
	}
	if !errors.Is(err, ErrMailboxFull) {
		t.Fatalf("mailbox byte quota: %v", err)
	}
	big := env(to, b, 99, t0)
	big.Ciphertext = make([]byte, 41)
	if _, err := s.Put(ctx, big, t0); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized envelope: %v", err)
	}
	// Deleting frees the sender's quota.
	if _, err := s.Delete(ctx, to, []wire.MessageID{msgID(0)}, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, env(to, a, 4, t0), t0); err != nil && !errors.Is(err, ErrMailboxFull) {
		t.Fatalf("after delete: %v", err)
	}
}

func TestStoreDropRefusesRevokedDevice(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, Limits{})
	to, from := randDevice(t), randDevice(t)
	if _, err := s.Put(ctx, env(to, from, 1, t0), t0); err != nil {
		t.Fatal(err)
	}
	if err := s.Drop(ctx, to, t0); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Count(ctx, to); n != 0 {
		t.Fatalf("count %d after drop", n)
	}
	if _, err := s.Put(ctx, env(to, from, 2, t0), t0); !errors.Is(err, ErrRevoked) {
		t.Fatalf("put after revocation: %v", err)
	}
	if devs, _ := s.Devices(ctx); len(devs) != 0 {
		t.Fatalf("devices %v", devs)
	}
}

func TestStoreDeleteMarksExpire(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, Limits{TTL: time.Hour, DeleteMarkTTL: 2 * time.Hour})
	to, from := randDevice(t), randDevice(t)
	if _, err := s.Put(ctx, env(to, from, 1, t0), t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(ctx, to, []wire.MessageID{msgID(1)}, t0); err != nil {
		t.Fatal(err)
	}
	sum, _ := s.Summary(ctx, to)
	if len(sum.Deleted) != 1 || len(sum.IDs) != 0 {
		t.Fatalf("summary %+v", sum)
	}
	res, err := s.Expire(ctx, t0.Add(3*time.Hour))
	if err != nil || res.MarksDropped != 1 {
		t.Fatalf("expire: %+v %v", res, err)
	}
	if devs, _ := s.Devices(ctx); len(devs) != 0 {
		t.Fatalf("mailbox left behind: %v", devs)
	}
}

// countingStore counts a datastore's point reads (Get and Has) by key prefix (/e/, /i/, ...) and the bytes Get
// returns.
type countingStore struct {
	ds.Batching
	mu    sync.Mutex
	reads map[string]int
	bytes int
}

func (c *countingStore) Get(ctx context.Context, k ds.Key) ([]byte, error) {
	b, err := c.Batching.Get(ctx, k)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reads[k.String()[:3]]++
	c.bytes += len(b)
	return b, err
}

func (c *countingStore) Has(ctx context.Context, k ds.Key) (bool, error) {
	c.mu.Lock()
	c.reads[k.String()[:3]]++
	c.mu.Unlock()
	return c.Batching.Has(ctx, k)
}

func (c *countingStore) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reads, c.bytes = make(map[string]int), 0
}

// Acknowledging envelopes must not read their records back: reading each record (up to 64 KiB, from sstables
// once the mailbox outgrows Pebble's memtable and block cache) made a full fetch of 10,000 envelopes several
// times slower per envelope than one of 1,000. The index entry alone keeps the counters right, and it is the
// only point read per held envelope.
func TestStoreDeleteReadsOnlyTheIndexNotTheRecords(t *testing.T) {
	ctx := context.Background()
	cs := &countingStore{Batching: namespace.Wrap(openPebble(t, t.TempDir()), ds.NewKey("/mailbox")),
		reads: make(map[string]int)}
	s := NewStore(cs, Limits{})
	to := randDevice(t)
	senders := []wire.DeviceID{randDevice(t), randDevice(t), randDevice(t)}
	const n, batch = 300, 100
	ids := make([]wire.MessageID, n)
	for i := range n {
		e := env(to, senders[i%len(senders)], i, t0.Add(time.Duration(i)*time.Millisecond))
		e.Ciphertext = append(e.Ciphertext, make([]byte, 1000+i)...)
		if _, err := s.Put(ctx, e, t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		ids[i] = e.MessageID
	}
	cs.reset()
	for i := 0; i < n; i += batch {
		removed, err := s.Delete(ctx, to, ids[i:i+batch], t0.Add(time.Minute))
		if err != nil || removed != batch {
			t.Fatalf("delete batch %d: removed %d, %v", i/batch, removed, err)
		}
	}
	cs.mu.Lock()
	reads, bytes := cs.reads, cs.bytes
	cs.mu.Unlock()
	if reads[pEnv] != 0 {
		t.Errorf("deleting %d envelopes read %d envelope records", n, reads[pEnv])
	}
	if reads[pIndex] != n {
		t.Errorf("deleting %d envelopes read %d index entries, want one each", n, reads[pIndex])
	}
	if reads[pTomb] != 0 || reads[pDel] != 0 {
		t.Errorf("deleting %d held envelopes of a mailbox without tombstones looked up %d tombstones and %d delete marks",
			n, reads[pTomb], reads[pDel])
	}
	// Per batch, beyond the index entries: the counters (32 bytes) and each sender's count (8 bytes).
	if limit := n*indexLen + (n/batch)*(32+8*len(senders)); bytes > limit {
		t.Errorf("deleting %d envelopes read %d bytes, want at most %d", n, bytes, limit)
	}
	m, err := s.getMeta(ctx, to)
	if err != nil {
		t.Fatal(err)
	}
	if m.count != 0 || m.bytes != 0 || m.marks != n {
		t.Fatalf("counters after deleting everything: %+v", m)
	}
	for _, from := range senders {
		if ok, err := cs.Has(ctx, senderKey(to, from)); err != nil || ok {
			t.Fatalf("sender count left behind: %v %v", ok, err)
		}
	}
}

// An ID named twice in one acknowledgement, or again in a later one, is removed and counted once.
func TestStoreDeleteCountsAnIDNamedTwiceOnce(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, Limits{})
	to, from := randDevice(t), randDevice(t)
	var es []*Envelope
	for i := range 3 {
		e := env(to, from, i, t0.Add(time.Duration(i)*time.Second))
		if _, err := s.Put(ctx, e, t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		es = append(es, e)
	}
	check := func(step string, count, bytes, marks, fromSender int64) {
		t.Helper()
		m, err := s.getMeta(ctx, to)
		if err != nil {
			t.Fatal(err)
		}
		n, _, err := s.getUint(ctx, senderKey(to, from))
		if err != nil {
			t.Fatal(err)
		}
		if m.count != count || m.bytes != bytes || m.marks != marks || int64(n) != fromSender {
			t.Fatalf("%s: counters %+v and %d from the sender, want count %d, bytes %d, marks %d, %d from the sender",
				step, m, n, count, bytes, marks, fromSender)
		}
	}
	removed, err := s.Delete(ctx, to, []wire.MessageID{es[0].MessageID, es[0].MessageID, es[1].MessageID}, t0.Add(time.Minute))
	if err != nil || removed != 2 {
		t.Fatalf("delete: removed %d, %v", removed, err)
	}
	check("after one ack naming m0 twice", 1, int64(len(es[2].Ciphertext)), 2, 1)
	removed, err = s.Delete(ctx, to, []wire.MessageID{es[1].MessageID, es[2].MessageID}, t0.Add(time.Minute))
	if err != nil || removed != 1 {
		t.Fatalf("delete again: removed %d, %v", removed, err)
	}
	check("after acking m1 again and m2", 0, 0, 3, 0)
}

// An index entry written before entries carried the sender and size (8 bytes, the stamp alone) still serves
// Get, Delete and the count limit.
func TestStoreReadsIndexEntriesOfTheOlderForm(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, Limits{MaxCount: 3})
	to, a, b := randDevice(t), randDevice(t), randDevice(t)
	var es []*Envelope
	for i := range 3 {
		from := a
		if i == 1 {
			from = b
		}
		e := env(to, from, i, t0.Add(time.Duration(i)*time.Second))
		if _, err := s.Put(ctx, e, t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if err := s.d.Put(ctx, idKey(pIndex, to, e.MessageID), u64(uint64(e.Stamp))); err != nil {
			t.Fatal(err)
		}
		es = append(es, e)
	}
	got, ok, err := s.Get(ctx, to, es[1].MessageID)
	if err != nil || !ok || string(got.Ciphertext) != string(es[1].Ciphertext) || got.Sender != b {
		t.Fatalf("get: %+v %v %v", got, ok, err)
	}
	if r, err := s.Put(ctx, es[2], t0.Add(time.Minute)); err != nil || r != Duplicate {
		t.Fatalf("put again: %v %v", r, err)
	}
	if removed, err := s.Delete(ctx, to, []wire.MessageID{es[1].MessageID}, t0.Add(time.Minute)); err != nil || removed != 1 {
		t.Fatalf("delete: %d %v", removed, err)
	}
	if ok, err := s.d.Has(ctx, senderKey(to, b)); err != nil || ok {
		t.Fatalf("sender count after delete: %v %v", ok, err)
	}
	// Two more push es[0] out by the count limit; then deleting the rest empties the counters.
	var rest []wire.MessageID
	for i := 3; i < 5; i++ {
		e := env(to, a, i, t0.Add(time.Duration(i)*time.Second))
		if _, err := s.Put(ctx, e, t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		rest = append(rest, e.MessageID)
	}
	ts, err := s.Tombstones(ctx, to)
	if err != nil || len(ts) != 1 || ts[0].MessageID != es[0].MessageID || ts[0].Sender != a {
		t.Fatalf("tombstones %+v %v", ts, err)
	}
	rest = append(rest, es[2].MessageID)
	if removed, err := s.Delete(ctx, to, rest, t0.Add(time.Minute)); err != nil || removed != 3 {
		t.Fatalf("delete the rest: %d %v", removed, err)
	}
	m, err := s.getMeta(ctx, to)
	if err != nil || m.count != 0 || m.bytes != 0 {
		t.Fatalf("counters %+v %v", m, err)
	}
	if ok, err := s.d.Has(ctx, senderKey(to, a)); err != nil || ok {
		t.Fatalf("sender count left behind: %v %v", ok, err)
	}
}

func FuzzDecodeIndex(f *testing.F) {
	h := held{MessageID: msgID(1), Sender: wire.DeviceID{1, 2, 3}, Stamp: t0.UnixNano(), Size: 1024}
	f.Add(h.encodeIndex())
	f.Add(u64(uint64(t0.UnixNano())))
	f.Add([]byte{})
	f.Add(make([]byte, indexLen))
	f.Add(h.encodeIndex()[:indexLen-1])
	f.Add(append(h.encodeIndex(), 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, full, err := decodeIndex(msgID(7), b)
		if err != nil {
			return
		}
		if h.MessageID != msgID(7) || h.Stamp <= 0 {
			t.Fatalf("decoded %+v", h)
		}
		if !full {
			if len(b) != oldIndexLen || h.Size != 0 || h.Sender != (wire.DeviceID{}) {
				t.Fatalf("older form of %d bytes decoded as %+v", len(b), h)
			}
			return
		}
		if h.Size <= 0 || string(h.encodeIndex()) != string(b) {
			t.Fatalf("%x decoded as %+v, which encodes differently", b, h)
		}
	})
}
