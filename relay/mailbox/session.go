package mailbox

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/iagon/gridchat/wire"
)

// subscriber is an open fetch stream waiting for new envelopes of one device.
type subscriber struct {
	ch   chan Envelope
	done chan struct{}
	once sync.Once
}

func (sub *subscriber) stop() { sub.once.Do(func() { close(sub.done) }) }

func (s *Service) subscribe(dev wire.DeviceID) *subscriber {
	sub := &subscriber{ch: make(chan Envelope, s.lim.SubscriberQueue), done: make(chan struct{})}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.subs[dev] == nil {
		s.subs[dev] = make(map[*subscriber]struct{})
	}
	s.subs[dev][sub] = struct{}{}
	if s.closed {
		sub.stop()
	}
	return sub
}

func (s *Service) unsubscribe(dev wire.DeviceID, sub *subscriber) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.subs[dev], sub)
	if len(s.subs[dev]) == 0 {
		delete(s.subs, dev)
	}
}

// notify hands a newly stored envelope to the device's open fetch streams. A stream whose queue is full is cut
// rather than blocking the put: its gateway fetches again.
func (s *Service) notify(e *Envelope) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for sub := range s.subs[e.Recipient] {
		select {
		case sub.ch <- *e:
		default:
			sub.stop()
			s.metrics.subsDropped.Inc()
		}
	}
}

func (s *Service) verifyFetch(ctx context.Context, r SignedRequest) (wire.DeviceID, bool, error) {
	dev, err := s.verify(ctx, PurposeFetch, r.DevicePublic, r.Request, r.Body)
	if err != nil {
		return dev, false, err
	}
	var b fetchBody
	if err := cb.dec.Unmarshal(r.Body, &b); err != nil {
		return dev, false, errorf(StatusMalformed, "fetch body: %v", err)
	}
	if string(b.Device) != string(dev[:]) {
		return dev, false, errorf(StatusUnauthorized, "body names another device")
	}
	return dev, b.Follow, nil
}

// sortedTombstones returns dev's tombstones in delivery order.
func (s *Service) sortedTombstones(ctx context.Context, dev wire.DeviceID) ([]Tombstone, error) {
	ts, err := s.store.Tombstones(ctx, dev)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(ts, func(a, b Tombstone) int {
		if c := cmp.Compare(a.Stamp, b.Stamp); c != 0 {
			return c
		}
		return cmp.Compare(string(a.MessageID[:]), string(b.MessageID[:]))
	})
	return ts, nil
}

// serveFetch streams a device's mailbox to its gateway: tombstones, then envelopes in delivery order, then
// tCaughtUp; with follow, envelopes stored later as they arrive. Meanwhile it applies the gateway's acks.
func (s *Service) serveFetch(st network.Stream, f *frame) {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	dev, follow, err := s.verifyFetch(ctx, SignedRequest{DevicePublic: f.DevicePublic, Request: f.Request, Body: f.Body})
	if err != nil {
		s.metrics.refusal(err)
		_ = writeFrame(st, errFrame(err))
		return
	}
	if s.sessions.Add(1) > int64(s.lim.MaxSessions) {
		s.sessions.Add(-1)
		s.metrics.refusal(ErrBusy)
		_ = writeFrame(st, errFrame(errorf(StatusBusy, "too many open fetches")))
		return
	}
	defer s.sessions.Add(-1)
	// The device is authenticated: no read deadline from here on (the gateway holds the stream while the
	// device is connected); every write still has one.
	_ = st.SetReadDeadline(time.Time{})
	var sub *subscriber
	if follow {
		sub = s.subscribe(dev)
		defer s.unsubscribe(dev, sub)
	}
	// Registered before the snapshot's iterator opens, and unregistered only after the ack reader is done.
	hs := s.store.watch(dev)
	defer s.store.unwatch(hs)
	var wmu sync.Mutex
	write := func(f *frame) error {
		wmu.Lock()
		defer wmu.Unlock()
		_ = st.SetWriteDeadline(s.now().Add(s.lim.RequestTimeout))
		return writeFrame(st, f)
	}
	readerDone := make(chan struct{})
	s.wg.Go(func() {
		defer close(readerDone)
		defer cancel()
		for {
			f, err := readFrame(st, maxControlFrame)
			if err != nil {
				return
			}
			if f.Type != tAck {
				_ = write(errFrame(errorf(StatusMalformed, "frame type %d inside a fetch", f.Type)))
				_ = st.Reset()
				return
			}
			res := &frame{Type: tAckResult, Seq: f.Seq}
			ids, err := parseIDs(f.IDs, maxAckBatch)
			if err == nil {
				var n int
				n, err = s.store.deleteHinted(ctx, hs, ids, s.now())
				s.metrics.deleted.Add(float64(n))
				res.Count = uint64(n)
			}
			if err != nil {
				res.Status, res.Message = statusOf(err), "delete failed"
			}
			if write(res) != nil {
				_ = st.Reset()
				return
			}
		}
	})
	defer func() { <-readerDone }()

	if err := s.sendSnapshot(ctx, hs, write); err != nil {
		_ = st.Reset()
		return
	}
	if !follow {
		<-ctx.Done()
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-sub.done:
			_ = write(errFrame(errorf(StatusBusy, "fell behind or stopped; fetch again")))
			_ = st.Reset()
			return
		case e := <-sub.ch:
			if write(&frame{Type: tEnvelope, Env: toRec(&e)}) != nil {
				_ = st.Reset()
				return
			}
			s.metrics.fetched.Inc()
		}
	}
}

func (s *Service) sendSnapshot(ctx context.Context, hs *hints, write func(*frame) error) error {
	ts, err := s.sortedTombstones(ctx, hs.dev)
	if err != nil {
		return err
	}
	for i := range ts {
		if err := write(&frame{Type: tTombstone, Tomb: toTombRec(&ts[i])}); err != nil {
			return err
		}
	}
	err = s.store.iterateHinted(ctx, hs, func(e *Envelope) error {
		if err := write(&frame{Type: tEnvelope, Env: toRec(e)}); err != nil {
			return err
		}
		s.metrics.fetched.Inc()
		return nil
	})
	if err != nil {
		return err
	}
	return write(&frame{Type: tCaughtUp})
}

// Item is one thing a Session delivers: an envelope, or the tombstone of one that expired.
type Item struct {
	Envelope  *Envelope
	Tombstone *Tombstone
}

func (it *Item) id() wire.MessageID {
	if it.Envelope != nil {
		return it.Envelope.MessageID
	}
	return it.Tombstone.MessageID
}

// before orders items: tombstones first, then by (stamp, message ID).
func (it *Item) before(o *Item) bool {
	if (it.Tombstone != nil) != (o.Tombstone != nil) {
		return it.Tombstone != nil
	}
	var a, b int64
	if it.Envelope != nil {
		a, b = it.Envelope.Stamp, o.Envelope.Stamp
	} else {
		a, b = it.Tombstone.Stamp, o.Tombstone.Stamp
	}
	if a != b {
		return a < b
	}
	x, y := it.id(), o.id()
	return string(x[:]) < string(y[:])
}

// Session is a gateway's open fetch of one device's mailbox from all its replicas: Next yields the merged,
// de-duplicated items in delivery order, then (with follow) envelopes stored later; Ack deletes on every
// replica what the device acknowledged.
type Session struct {
	s      *Service
	dev    wire.DeviceID
	follow bool
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	sources  []*source
	live     chan Item
	out      chan Item
	caughtUp chan struct{}

	ackMu       sync.Mutex
	outstanding [][]chan error // per Ack batch, one answer channel per replica

	closeOnce sync.Once
}

// source is one replica's stream of a session (st is nil for this node's own store, and hints non-nil).
type source struct {
	p         peer.ID
	st        network.Stream
	hints     *hints
	wmu       sync.Mutex
	snap      chan Item     // the snapshot, in delivery order; closed at tCaughtUp or failure
	ready     chan struct{} // closed at the first frame or failure
	readyOnce sync.Once
	readyErr  error // set before ready is closed
	dead      atomic.Bool

	mu      sync.Mutex
	seq     uint64
	pending map[uint64]chan error
}

func newSource(p peer.ID) *source {
	return &source{p: p, snap: make(chan Item, 64), ready: make(chan struct{}), pending: make(map[uint64]chan error)}
}

// Open starts a fetch of a device's mailbox with a request the device signed (NewFetchRequest): it contacts
// every replica, and fails only if none accepts (with the first replica's refusal: ErrUnauthorized,
// ErrReplay, ErrStale, ErrRevoked, ...). The session runs until Close, or until the snapshot is delivered
// when the request does not follow.
func (s *Service) Open(ctx context.Context, r SignedRequest) (*Session, error) {
	var b fetchBody
	if err := cb.dec.Unmarshal(r.Body, &b); err != nil || len(b.Device) != wire.DeviceIDSize {
		return nil, errorf(StatusMalformed, "fetch body")
	}
	dev := wire.DeviceID(b.Device)
	reps, err := s.Replicas(ctx, dev)
	if err != nil {
		return nil, err
	}
	ss := &Session{s: s, dev: dev, follow: b.Follow, live: make(chan Item, 64), out: make(chan Item),
		caughtUp: make(chan struct{})}
	ss.ctx, ss.cancel = context.WithCancel(s.ctx)
	for _, p := range reps {
		src := newSource(p)
		ss.sources = append(ss.sources, src)
		if p == s.host.ID() {
			// Registered before runLocal's iterator opens; unregistered by Close.
			src.hints = s.store.watch(dev)
			ss.wg.Go(func() { ss.runLocal(src, r) })
		} else {
			ss.wg.Go(func() { ss.runRemote(ctx, src, r) })
		}
	}
	var errs []error
	for _, src := range ss.sources {
		select {
		case <-src.ready:
		case <-ctx.Done():
			ss.Close()
			return nil, ctx.Err()
		}
		if src.readyErr != nil {
			errs = append(errs, src.readyErr)
		}
	}
	if len(errs) == len(ss.sources) {
		ss.Close()
		// Prefer the device-facing refusal (unauthorized, replay, ...) over a transport failure.
		for _, e := range errs {
			if st := statusOf(e); st != StatusInternal {
				return nil, e
			}
		}
		return nil, fmt.Errorf("mailbox: open: no replica reachable: %w", errors.Join(errs...))
	}
	ss.wg.Go(ss.merge)
	return ss, nil
}

func (src *source) markReady(err error) {
	src.readyOnce.Do(func() {
		src.readyErr = err
		close(src.ready)
	})
}

func (ss *Session) fail(src *source, err error) {
	if src.dead.Swap(true) {
		return
	}
	src.markReady(err)
	src.mu.Lock()
	for seq, ch := range src.pending {
		ch <- err
		delete(src.pending, seq)
	}
	src.mu.Unlock()
}

func (ss *Session) runLocal(src *source, r SignedRequest) {
	s := ss.s
	snapClosed := false
	defer func() {
		if !snapClosed {
			close(src.snap)
		}
	}()
	_, _, err := s.verifyFetch(ss.ctx, r)
	if err != nil {
		ss.fail(src, err)
		return
	}
	var sub *subscriber
	if ss.follow {
		sub = s.subscribe(ss.dev)
		defer s.unsubscribe(ss.dev, sub)
	}
	src.markReady(nil)
	send := func(it Item) error {
		select {
		case src.snap <- it:
			return nil
		case <-ss.ctx.Done():
			return ss.ctx.Err()
		}
	}
	ts, err := s.sortedTombstones(ss.ctx, ss.dev)
	if err != nil {
		ss.fail(src, err)
		return
	}
	for i := range ts {
		if send(Item{Tombstone: &ts[i]}) != nil {
			return
		}
	}
	err = s.store.iterateHinted(ss.ctx, src.hints, func(e *Envelope) error {
		c := *e
		c.Ciphertext = append([]byte(nil), e.Ciphertext...)
		return send(Item{Envelope: &c})
	})
	if err != nil {
		ss.fail(src, err)
		return
	}
	close(src.snap)
	snapClosed = true
	if !ss.follow {
		return
	}
	for {
		select {
		case <-ss.ctx.Done():
			return
		case <-sub.done:
			ss.fail(src, errorf(StatusBusy, "local subscription cut"))
			return
		case e := <-sub.ch:
			select {
			case ss.live <- Item{Envelope: &e}:
			case <-ss.ctx.Done():
				return
			}
		}
	}
}

func (ss *Session) runRemote(openCtx context.Context, src *source, r SignedRequest) {
	s := ss.s
	snapOpen := true
	defer func() {
		if snapOpen {
			close(src.snap)
		}
	}()
	ctx, cancel := context.WithTimeout(openCtx, s.lim.RequestTimeout)
	st, err := s.host.NewStream(ctx, src.p, s.proto)
	cancel()
	if err != nil {
		ss.fail(src, errorf(StatusInternal, "open stream to %s: %v", src.p, err))
		return
	}
	src.st = st
	// Close resets the stream to stop this reader.
	stop := context.AfterFunc(ss.ctx, func() { _ = st.Reset() })
	defer stop()
	_ = st.SetWriteDeadline(s.now().Add(s.lim.RequestTimeout))
	if err := writeFrame(st, &frame{Type: tFetch, DevicePublic: r.DevicePublic, Request: r.Request, Body: r.Body}); err != nil {
		_ = st.Reset()
		ss.fail(src, errorf(StatusInternal, "write to %s: %v", src.p, err))
		return
	}
	// The replica must answer (first frame or refusal) in time; after that it may stay quiet for as long as
	// the device is connected.
	_ = st.SetReadDeadline(s.now().Add(s.lim.RequestTimeout))
	first := true
	for {
		f, err := readFrame(st, s.maxFrame())
		if err != nil {
			_ = st.Reset()
			ss.fail(src, errorf(StatusInternal, "read from %s: %v", src.p, err))
			return
		}
		if ferr := f.err(); ferr != nil {
			_ = st.Reset()
			ss.fail(src, ferr)
			return
		}
		if first {
			first = false
			_ = st.SetReadDeadline(time.Time{})
			src.markReady(nil)
		}
		var it Item
		switch f.Type {
		case tTombstone:
			t, err := fromTombRec(f.Tomb)
			if err != nil {
				_ = st.Reset()
				ss.fail(src, err)
				return
			}
			it.Tombstone = &t
		case tEnvelope:
			e, err := fromRec(f.Env)
			if err != nil || e.Recipient != ss.dev {
				_ = st.Reset()
				ss.fail(src, errorf(StatusMalformed, "bad envelope from %s", src.p))
				return
			}
			it.Envelope = &e
		case tCaughtUp:
			if snapOpen {
				close(src.snap)
				snapOpen = false
			}
			continue
		case tAckResult:
			src.mu.Lock()
			ch := src.pending[f.Seq]
			delete(src.pending, f.Seq)
			src.mu.Unlock()
			if ch != nil {
				var aerr error
				if f.Status != StatusOK {
					aerr = &Error{Status: f.Status, Message: f.Message}
				}
				ch <- aerr
			}
			continue
		default:
			_ = st.Reset()
			ss.fail(src, errorf(StatusMalformed, "unexpected frame type %d from %s", f.Type, src.p))
			return
		}
		dst := ss.live
		if snapOpen {
			dst = src.snap
		}
		select {
		case dst <- it:
		case <-ss.ctx.Done():
			return
		}
	}
}

// merge merges the replicas' snapshots in delivery order, then forwards live envelopes, dropping every message
// ID it has already delivered.
func (ss *Session) merge() {
	defer close(ss.out)
	seen := newSeenSet(4 * ss.s.lim.MaxCount)
	emit := func(it Item) bool {
		if !seen.add(it.id()) {
			return true
		}
		select {
		case ss.out <- it:
			return true
		case <-ss.ctx.Done():
			return false
		}
	}
	heads := make([]*Item, len(ss.sources))
	exhausted := make([]bool, len(ss.sources))
	for {
		for i, src := range ss.sources {
			if heads[i] != nil || exhausted[i] {
				continue
			}
			select {
			case it, ok := <-src.snap:
				if !ok {
					exhausted[i] = true
				} else {
					heads[i] = &it
				}
			case <-ss.ctx.Done():
				return
			}
		}
		best := -1
		for i, h := range heads {
			if h != nil && (best < 0 || h.before(heads[best])) {
				best = i
			}
		}
		if best < 0 {
			break
		}
		it := heads[best]
		heads[best] = nil
		if !emit(*it) {
			return
		}
	}
	close(ss.caughtUp)
	if !ss.follow {
		return
	}
	for {
		select {
		case it := <-ss.live:
			if !emit(it) {
				return
			}
		case <-ss.ctx.Done():
			return
		}
	}
}

// Next returns the next item in delivery order. It returns io.EOF when a non-following session has delivered
// its snapshot, and ErrClosed after Close.
func (ss *Session) Next(ctx context.Context) (Item, error) {
	select {
	case it, ok := <-ss.out:
		if !ok {
			if ss.ctx.Err() != nil {
				return Item{}, ErrClosed
			}
			return Item{}, io.EOF
		}
		return it, nil
	case <-ctx.Done():
		return Item{}, ctx.Err()
	}
}

// CaughtUp is closed once everything the replicas held when the session opened has been passed to Next.
func (ss *Session) CaughtUp() <-chan struct{} { return ss.caughtUp }

// Replicas returns the peers the session fetches from.
func (ss *Session) Replicas() []peer.ID {
	out := make([]peer.ID, len(ss.sources))
	for i, src := range ss.sources {
		out[i] = src.p
	}
	return out
}

// Ack sends the deletion of the given envelopes (and tombstones) to every replica of the session and returns
// without waiting for the answers, which arrive on the same streams behind the envelopes still in flight; Flush
// waits for them. It fails only if no replica could be sent the batch. A replica that misses a delete learns it
// by anti-entropy.
func (ss *Session) Ack(ctx context.Context, ids ...wire.MessageID) error {
	for len(ids) > 0 {
		n := min(len(ids), maxAckBatch)
		if err := ss.ackBatch(ctx, ids[:n]); err != nil {
			return err
		}
		ids = ids[n:]
	}
	return nil
}

func (ss *Session) ackBatch(ctx context.Context, ids []wire.MessageID) error {
	var (
		chans []chan error
		errs  []error
	)
	for _, src := range ss.sources {
		if src.dead.Load() {
			continue
		}
		ch, err := ss.ackOne(ctx, src, ids)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		chans = append(chans, ch)
	}
	if len(chans) == 0 {
		return fmt.Errorf("mailbox: ack: no replica took it: %w", errors.Join(append(errs, ErrNoQuorum)...))
	}
	ss.ackMu.Lock()
	ss.outstanding = append(ss.outstanding, chans)
	ss.ackMu.Unlock()
	return nil
}

// Flush waits until every replica has answered every Ack so far. With a following session, keep calling Next
// meanwhile: the answers queue behind envelopes that are still to be read. It fails if some batch was deleted
// by no replica.
func (ss *Session) Flush(ctx context.Context) error {
	ss.ackMu.Lock()
	batches := ss.outstanding
	ss.outstanding = nil
	ss.ackMu.Unlock()
	var errs []error
	for _, chans := range batches {
		ok := 0
		var berrs []error
		for _, ch := range chans {
			select {
			case err := <-ch:
				if err == nil {
					ok++
				} else {
					berrs = append(berrs, err)
				}
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if ok == 0 {
			errs = append(errs, berrs...)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("mailbox: flush: %w: %w", ErrNoQuorum, errors.Join(errs...))
	}
	return nil
}

// ackOne sends one batch to one replica and returns the channel its answer arrives on.
func (ss *Session) ackOne(ctx context.Context, src *source, ids []wire.MessageID) (chan error, error) {
	s := ss.s
	ch := make(chan error, 1)
	if src.st == nil {
		n, err := s.store.deleteHinted(ctx, src.hints, ids, s.now())
		s.metrics.deleted.Add(float64(n))
		ch <- err
		return ch, nil
	}
	src.mu.Lock()
	if src.dead.Load() {
		src.mu.Unlock()
		return nil, errorf(StatusInternal, "replica %s gone", src.p)
	}
	src.seq++
	seq := src.seq
	src.pending[seq] = ch
	src.mu.Unlock()
	src.wmu.Lock()
	_ = src.st.SetWriteDeadline(s.now().Add(s.lim.RequestTimeout))
	err := writeFrame(src.st, &frame{Type: tAck, Seq: seq, IDs: idBytes(ids)})
	src.wmu.Unlock()
	if err != nil {
		ss.fail(src, errorf(StatusInternal, "write ack to %s: %v", src.p, err))
		_ = src.st.Reset()
		return nil, err
	}
	return ch, nil
}

// Close ends the session and waits for its goroutines. It is idempotent.
func (ss *Session) Close() error {
	ss.closeOnce.Do(func() {
		ss.cancel()
		ss.wg.Wait()
		for _, src := range ss.sources {
			if src.hints != nil {
				ss.s.store.unwatch(src.hints)
			}
		}
	})
	return nil
}

// seenSet remembers up to max message IDs, forgetting the oldest first.
type seenSet struct {
	max  int
	m    map[wire.MessageID]struct{}
	ring []wire.MessageID
	next int
}

func newSeenSet(max int) *seenSet {
	return &seenSet{max: max, m: make(map[wire.MessageID]struct{})}
}

// add records id and reports whether it was new.
func (s *seenSet) add(id wire.MessageID) bool {
	if _, ok := s.m[id]; ok {
		return false
	}
	if len(s.ring) < s.max {
		s.ring = append(s.ring, id)
	} else {
		delete(s.m, s.ring[s.next])
		s.ring[s.next] = id
		s.next = (s.next + 1) % s.max
	}
	s.m[id] = struct{}{}
	return true
}
