package mailbox

import (
	"context"
	"sync"
	"time"

	"github.com/iagon/gridchat/wire"
)

// A fetch streams a mailbox in delivery order, and the device acknowledges what it received soon after, mostly
// in the same order. Finding each acknowledged envelope's index entry again is a point read, and once the
// mailbox outgrows Pebble's memtable and block cache (which the fetch's own scan keeps flushing) those reads
// were half the CPU of a drain of 10,000 envelopes. Hints remember the index entries of the envelopes one
// fetch streamed, so that acknowledging them reads nothing.
//
// A hint must never name an envelope that is gone, or its delete would be counted twice. Every removal of an
// envelope runs under its device's lock and passes through Store.forget, which drops that envelope's hint from
// every hints of the device. An envelope the fetch's iterator (a snapshot) has not reached yet has no hint to
// drop: its removal is remembered in gone, and the fetch skips it when it gets there.
//
// A fetch keeps at most maxHintsPerFetch hints, dropping the oldest first, and all fetches of a store at most
// maxHintsPerStore (about 8 MiB); a fetch gives its share back once everything it streamed is acknowledged.
// An ack without a hint reads the index, as before.
const (
	maxHintsPerFetch = 4096
	maxHintsPerStore = 1 << 16
)

// hints are what one fetch of one device remembers of the envelopes it streamed.
type hints struct {
	s   *Store
	dev wire.DeviceID

	mu   sync.Mutex
	held map[wire.MessageID]held
	// ring holds the IDs in the order added, the oldest at next once full; its length is this fetch's share
	// of the store's maxHintsPerStore.
	ring    []wire.MessageID
	next    int
	gone    map[wire.MessageID]struct{} // removed before the fetch reached them (at most maxHintsPerFetch)
	pos     held                        // the last envelope the fetch reached
	started bool
	scanned bool // the fetch has passed its last envelope: nothing is ahead of it
	off     bool // unwatched, dropped, or too much removed ahead of the fetch: no hints any more
}

// watch starts remembering hints for a fetch of dev. Call it before the fetch opens its iterator, so that no
// removal after the iterator's snapshot goes unseen, and unwatch when the fetch ends.
func (s *Store) watch(dev wire.DeviceID) *hints {
	w := &hints{s: s, dev: dev, held: make(map[wire.MessageID]held), gone: make(map[wire.MessageID]struct{})}
	s.hmu.Lock()
	defer s.hmu.Unlock()
	if s.watching[dev] == nil {
		s.watching[dev] = make(map[*hints]struct{})
	}
	s.watching[dev][w] = struct{}{}
	return w
}

// unwatch stops w; it answers no take from now on.
func (s *Store) unwatch(w *hints) {
	s.hmu.Lock()
	delete(s.watching[w.dev], w)
	if len(s.watching[w.dev]) == 0 {
		delete(s.watching, w.dev)
	}
	s.hmu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.turnOff()
}

// forget drops h from every fetch of dev: the envelope is being removed. The caller holds dev's lock.
func (s *Store) forget(dev wire.DeviceID, h *held) {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	for w := range s.watching[dev] {
		w.forget(h)
	}
}

// forgetAll turns off every fetch of dev: its mailbox is being dropped. The caller holds dev's lock.
func (s *Store) forgetAll(dev wire.DeviceID) {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	for w := range s.watching[dev] {
		w.mu.Lock()
		w.turnOff()
		w.mu.Unlock()
	}
}

// iterateHinted is Iterate for a fetch: it remembers each envelope in w before fn sees it.
func (s *Store) iterateHinted(ctx context.Context, w *hints, fn func(e *Envelope) error) error {
	err := s.iterate(ctx, w.dev, 0, func(e *Envelope) error {
		w.add(e)
		return fn(e)
	})
	if err == nil {
		w.finish()
	}
	return err
}

// deleteHinted is Delete for the acknowledgements of w's fetch.
func (s *Store) deleteHinted(ctx context.Context, w *hints, ids []wire.MessageID, now time.Time) (int, error) {
	return s.applyDeletes(ctx, w.dev, marksAt(ids, now), now, w)
}

// before reports whether h comes before o in delivery order.
func (h *held) before(o *held) bool {
	if h.Stamp != o.Stamp {
		return h.Stamp < o.Stamp
	}
	return string(h.MessageID[:]) < string(o.MessageID[:])
}

func (w *hints) turnOff() {
	w.release()
	w.off = true
	w.held, w.gone = nil, nil
}

// release gives w's share of the store's hints back.
func (w *hints) release() {
	w.s.hinted.Add(-int64(len(w.ring)))
	w.ring, w.next = nil, 0
	clear(w.held)
}

// releaseIfDone releases w's share once the fetch has passed its last envelope and nothing it hinted is left
// to acknowledge.
func (w *hints) releaseIfDone() {
	if w.scanned && len(w.held) == 0 && len(w.ring) > 0 {
		w.release()
	}
}

// add records that the fetch reached e.
func (w *hints) add(e *Envelope) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.off {
		return
	}
	h := heldOf(e)
	w.pos, w.started = h, true
	if _, ok := w.gone[h.MessageID]; ok {
		delete(w.gone, h.MessageID)
		return
	}
	if len(w.ring) < maxHintsPerFetch {
		if w.s.hinted.Add(1) > maxHintsPerStore {
			w.s.hinted.Add(-1)
			return
		}
		w.ring = append(w.ring, h.MessageID)
	} else {
		delete(w.held, w.ring[w.next])
		w.ring[w.next] = h.MessageID
		w.next = (w.next + 1) % maxHintsPerFetch
	}
	w.held[h.MessageID] = h
}

// finish records that the fetch passed its last envelope.
func (w *hints) finish() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.scanned = true
	w.gone = nil
	w.releaseIfDone()
}

// forget drops h, which is being removed.
func (w *hints) forget(h *held) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.off {
		return
	}
	if _, ok := w.held[h.MessageID]; ok {
		delete(w.held, h.MessageID)
		w.releaseIfDone()
		return
	}
	if w.scanned || (w.started && !w.pos.before(h)) {
		return // behind the fetch: its iterator does not return it again
	}
	if len(w.gone) == maxHintsPerFetch {
		w.turnOff()
		return
	}
	w.gone[h.MessageID] = struct{}{}
}

// take returns and drops the hint for id, if any. The caller holds the device's lock.
func (w *hints) take(id wire.MessageID) (held, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	h, ok := w.held[id]
	if ok {
		delete(w.held, id)
		w.releaseIfDone()
	}
	return h, ok
}
