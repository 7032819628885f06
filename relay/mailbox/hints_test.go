package mailbox

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/iagon/gridchat/wire"
)

// checkConsistent recomputes dev's counters from what the datastore holds and compares them with the stored
// ones: envelopes, bytes, tombstones, delete marks and each sender's count.
func checkConsistent(t *testing.T, s *Store, dev wire.DeviceID) {
	t.Helper()
	ctx := context.Background()
	var want meta
	senders := make(map[wire.DeviceID]uint64)
	err := s.Iterate(ctx, dev, func(e *Envelope) error {
		want.count++
		want.bytes += int64(len(e.Ciphertext))
		senders[e.Sender]++
		h, full, ok, err := s.readIndex(ctx, dev, e.MessageID)
		if err != nil || !ok || (full && h != heldOf(e)) {
			t.Errorf("index entry of %x: %+v %v %v", e.MessageID, h, ok, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		prefix string
		n      *int64
	}{{pIndex, nil}, {pTomb, &want.tombs}, {pDel, &want.marks}} {
		res, err := s.d.Query(ctx, query.Query{Prefix: p.prefix + devHex(dev), KeysOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		entries, err := res.Rest()
		if err != nil {
			t.Fatal(err)
		}
		if p.n != nil {
			*p.n = int64(len(entries))
		} else if int64(len(entries)) != want.count {
			t.Errorf("%d index entries for %d envelopes", len(entries), want.count)
		}
	}
	got, err := s.getMeta(ctx, dev)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("counters %+v, the datastore holds %+v", got, want)
	}
	res, err := s.d.Query(ctx, query.Query{Prefix: pSender + devHex(dev)})
	if err != nil {
		t.Fatal(err)
	}
	entries, err := res.Rest()
	if err != nil {
		t.Fatal(err)
	}
	stored := make(map[wire.DeviceID]uint64)
	for _, en := range entries {
		var d wire.DeviceID
		if _, err := hex.Decode(d[:], []byte(en.Key[strings.LastIndexByte(en.Key, '/')+1:])); err != nil {
			t.Fatalf("sender key %q: %v", en.Key, err)
		}
		stored[d] = binary.BigEndian.Uint64(en.Value)
	}
	if len(stored) != len(senders) {
		t.Errorf("sender counts %v, the datastore holds %v", stored, senders)
	}
	for d, n := range senders {
		if stored[d] != n {
			t.Errorf("sender %x: count %d, the datastore holds %d", d[:4], stored[d], n)
		}
	}
}

func newMemStore(lim Limits) *Store {
	return NewStore(dssync.MutexWrap(ds.NewMapDatastore()), lim)
}

// putN stores n envelopes for to from three senders, one second apart from t0, and returns their IDs.
func putN(t *testing.T, s *Store, to wire.DeviceID, first, n int) []wire.MessageID {
	t.Helper()
	senders := []wire.DeviceID{{1}, {2}, {3}}
	ids := make([]wire.MessageID, 0, n)
	for i := first; i < first+n; i++ {
		e := env(to, senders[i%len(senders)], i, t0.Add(time.Duration(i)*time.Second))
		e.Ciphertext = append(e.Ciphertext, make([]byte, i%7)...)
		if _, err := s.Put(context.Background(), e, t0.Add(time.Duration(first+n)*time.Second)); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.MessageID)
	}
	return ids
}

// stream runs a fetch's scan of to's mailbox with w, calling during (if set) after the i-th envelope.
func stream(t *testing.T, s *Store, w *hints, during func(i int)) int {
	t.Helper()
	n := 0
	err := s.iterateHinted(context.Background(), w, func(e *Envelope) error {
		if during != nil {
			during(n)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Acknowledging what a fetch streamed reads nothing from the datastore: the index entries were remembered as
// the fetch went by.
func TestStoreAcknowledgingWhatAFetchStreamedReadsNoIndex(t *testing.T) {
	ctx := context.Background()
	cs := &countingStore{Batching: dssync.MutexWrap(ds.NewMapDatastore()), reads: make(map[string]int)}
	s := NewStore(cs, Limits{})
	to := randDevice(t)
	ids := putN(t, s, to, 0, 300)
	w := s.watch(to)
	stream(t, s, w, nil)
	cs.reset()
	for i := 0; i < len(ids); i += 100 {
		if n, err := s.deleteHinted(ctx, w, ids[i:i+100], t0.Add(time.Hour)); err != nil || n != 100 {
			t.Fatalf("delete: %d %v", n, err)
		}
	}
	cs.mu.Lock()
	reads := cs.reads
	cs.mu.Unlock()
	if reads[pIndex] != 0 || reads[pEnv] != 0 || reads[pTomb] != 0 || reads[pDel] != 0 {
		t.Errorf("acknowledging %d streamed envelopes read %v", len(ids), reads)
	}
	checkConsistent(t, s, to)
	if n := s.hinted.Load(); n != 0 {
		t.Fatalf("%d hints kept once everything streamed was acknowledged", n)
	}
	s.unwatch(w)
}

// A hint never outlives its envelope: whatever removes an envelope a fetch streamed (another fetch's ack,
// anti-entropy, expiry, the count limit, revocation), a later ack of it by the fetch removes and counts
// nothing twice.
func TestStoreHintsNeverCountARemovedEnvelopeTwice(t *testing.T) {
	ctx := context.Background()
	now := t0.Add(time.Hour)
	for _, tc := range []struct {
		name   string
		lim    Limits
		remove func(t *testing.T, s *Store, to wire.DeviceID, ids []wire.MessageID) // removes ids[:5] or more
		// during, if set, runs inside the scan, after the i-th envelope, instead of remove afterwards.
		during bool
	}{
		{name: "another fetch acknowledged them", remove: func(t *testing.T, s *Store, to wire.DeviceID, ids []wire.MessageID) {
			w2 := s.watch(to)
			defer s.unwatch(w2)
			stream(t, s, w2, nil)
			if _, err := s.deleteHinted(ctx, w2, ids[:5], now); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "anti-entropy passed on their delete marks", remove: func(t *testing.T, s *Store, to wire.DeviceID, ids []wire.MessageID) {
			if _, err := s.ApplyDeletes(ctx, to, marksAt(ids[:5], now), now); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "they expired", lim: Limits{TTL: 2 * time.Minute}, remove: func(t *testing.T, s *Store, to wire.DeviceID, ids []wire.MessageID) {
			if r, err := s.Expire(ctx, t0.Add(2*time.Minute+4500*time.Millisecond)); err != nil || r.Expired != 5 {
				t.Fatalf("expire: %+v %v", r, err)
			}
		}},
		{name: "the count limit pushed them out", lim: Limits{MaxCount: 20}, remove: func(t *testing.T, s *Store, to wire.DeviceID, ids []wire.MessageID) {
			putN(t, s, to, 100, 5)
		}},
		{name: "the device was revoked", remove: func(t *testing.T, s *Store, to wire.DeviceID, ids []wire.MessageID) {
			if err := s.Drop(ctx, to, now); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "they were acknowledged before the fetch reached them", during: true, remove: func(t *testing.T, s *Store, to wire.DeviceID, ids []wire.MessageID) {
			if _, err := s.Delete(ctx, to, ids[10:15], now); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "they expired before the fetch reached them", during: true, lim: Limits{TTL: 2 * time.Minute},
			remove: func(t *testing.T, s *Store, to wire.DeviceID, ids []wire.MessageID) {
				if r, err := s.Expire(ctx, t0.Add(2*time.Minute+4500*time.Millisecond)); err != nil || r.Expired != 5 {
					t.Fatalf("expire: %+v %v", r, err)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newMemStore(tc.lim)
			to := randDevice(t)
			ids := putN(t, s, to, 0, 20)
			w := s.watch(to)
			var during func(int)
			if tc.during {
				during = func(i int) {
					if i == 2 {
						tc.remove(t, s, to, ids)
					}
				}
			}
			if n := stream(t, s, w, during); n != len(ids) {
				t.Fatalf("the scan saw %d of %d", n, len(ids))
			}
			if !tc.during {
				tc.remove(t, s, to, ids)
			}
			held := 0
			for _, id := range ids {
				if _, ok, err := s.Get(ctx, to, id); err != nil {
					t.Fatal(err)
				} else if ok {
					held++
				}
			}
			n, err := s.deleteHinted(ctx, w, ids, now)
			if err != nil {
				t.Fatal(err)
			}
			if n != held {
				t.Errorf("the fetch's ack removed %d, the mailbox held %d of them", n, held)
			}
			checkConsistent(t, s, to)
			s.unwatch(w)
			if n := s.hinted.Load(); n != 0 {
				t.Fatalf("%d hints left after unwatch", n)
			}
		})
	}
}

// A fetch keeps at most maxHintsPerFetch hints: the oldest go first, and their acks read the index instead.
func TestStoreHintsOfALongFetchAreBounded(t *testing.T) {
	ctx := context.Background()
	s := newMemStore(Limits{MaxCount: maxHintsPerFetch + 100, MaxPerSender: maxHintsPerFetch + 100})
	to := randDevice(t)
	ids := putN(t, s, to, 0, maxHintsPerFetch+100)
	w := s.watch(to)
	defer s.unwatch(w)
	stream(t, s, w, nil)
	if n := s.hinted.Load(); n != maxHintsPerFetch {
		t.Fatalf("%d hints held, want %d", n, maxHintsPerFetch)
	}
	if _, ok := w.take(ids[99]); ok {
		t.Fatal("the oldest hints were kept")
	}
	if n, err := s.deleteHinted(ctx, w, ids, t0.Add(time.Hour)); err != nil || n != len(ids) {
		t.Fatalf("delete: %d %v", n, err)
	}
	checkConsistent(t, s, to)
	if n := s.hinted.Load(); n != 0 {
		t.Fatalf("%d hints kept once everything streamed was acknowledged", n)
	}
}

// All fetches of a store together keep at most maxHintsPerStore hints; a fetch past that keeps none, and its
// acks read the index.
func TestStoreHintsOfAllFetchesAreBounded(t *testing.T) {
	ctx := context.Background()
	s := newMemStore(Limits{})
	to := randDevice(t)
	ids := putN(t, s, to, 0, 10)
	s.hinted.Store(maxHintsPerStore - 4)
	defer s.hinted.Store(0)
	w := s.watch(to)
	defer s.unwatch(w)
	stream(t, s, w, nil)
	if n := s.hinted.Load(); n != maxHintsPerStore {
		t.Fatalf("%d hints held in all, want %d", n, maxHintsPerStore)
	}
	if n, err := s.deleteHinted(ctx, w, ids, t0.Add(time.Hour)); err != nil || n != len(ids) {
		t.Fatalf("delete: %d %v", n, err)
	}
	checkConsistent(t, s, to)
	if n := s.hinted.Load(); n != maxHintsPerStore-4 {
		t.Fatalf("%d hints held in all after the fetch was acknowledged, want %d", n, maxHintsPerStore-4)
	}
}
