package mailbox

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/iagon/gridchat/wire"
)

// Anti-entropy, one exchange between replicas X (initiator) and Y of one mailbox:
//
//	X → Y  tSync       IDs: envelopes X holds, Tombstoned: expired on X
//	Y → X  tSyncReply  IDs: envelopes Y holds, Tombstoned: expired on Y, Deleted: Y's delete marks for what X holds
//	X → Y  tSyncReply  IDs: what X wants from Y, Deleted: X's delete marks for what Y holds
//	X → Y  tEnvelope…  what Y lacks, then tEnd
//	Y → X  tEnvelope…  what X wants, then tEnd
//
// Each side applies the other's delete marks before anything else, and never takes back an envelope it has a
// delete mark or a tombstone for, so an acknowledged envelope cannot return from a replica that missed the delete.

// ReconcileResult counts what one Reconcile round did.
type ReconcileResult struct {
	Mailboxes int // mailboxes compared
	Exchanges int // successful exchanges with other replicas
	Pulled    int // envelopes taken from other replicas
	Pushed    int // envelopes given to other replicas
	Deletes   int // envelopes deleted because another replica had a delete mark
}

func (r *ReconcileResult) add(o ReconcileResult) {
	r.Exchanges += o.Exchanges
	r.Pulled += o.Pulled
	r.Pushed += o.Pushed
	r.Deletes += o.Deletes
}

// Reconcile runs one anti-entropy and repair round now: for every mailbox this node holds anything of, it
// finds the current R closest nodes and exchanges summaries with each, so that all of them end with the same
// envelopes and delete marks (a replica that joined or came back gets what it lacks). The repair loop calls it
// on a timer and when peers connect or disconnect.
func (s *Service) Reconcile(ctx context.Context) (ReconcileResult, error) {
	var total ReconcileResult
	devs, err := s.store.Devices(ctx)
	if err != nil {
		return total, err
	}
	var errs []error
	for _, dev := range devs {
		reps, err := s.Replicas(ctx, dev)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		total.Mailboxes++
		for _, p := range reps {
			if p == s.host.ID() {
				continue
			}
			r, err := s.syncWith(ctx, p, dev)
			total.add(r)
			if err != nil {
				errs = append(errs, fmt.Errorf("with %s: %w", p, err))
			}
		}
		if ctx.Err() != nil {
			break
		}
	}
	return total, errors.Join(errs...)
}

func idSet(lists ...[]wire.MessageID) map[wire.MessageID]struct{} {
	n := 0
	for _, l := range lists {
		n += len(l)
	}
	m := make(map[wire.MessageID]struct{}, n)
	for _, l := range lists {
		for _, id := range l {
			m[id] = struct{}{}
		}
	}
	return m
}

func markIDs(ms []DeleteMark) []wire.MessageID {
	out := make([]wire.MessageID, len(ms))
	for i, m := range ms {
		out[i] = m.MessageID
	}
	return out
}

// marksFor returns the marks whose IDs are in held.
func marksFor(ms []DeleteMark, held map[wire.MessageID]struct{}) []markRec {
	var out []markRec
	for _, m := range ms {
		if _, ok := held[m.MessageID]; ok {
			out = append(out, markRec{MessageID: slices.Clone(m.MessageID[:]), TimeNS: m.Time.UnixNano()})
		}
	}
	return out
}

func parseMarks(recs []markRec) ([]DeleteMark, error) {
	out := make([]DeleteMark, len(recs))
	for i, r := range recs {
		if len(r.MessageID) != wire.MessageIDSize {
			return nil, errorf(StatusMalformed, "delete mark")
		}
		out[i] = DeleteMark{MessageID: wire.MessageID(r.MessageID), Time: time.Unix(0, r.TimeNS)}
	}
	return out, nil
}

// exchange is the state one side of an anti-entropy exchange needs.
type exchange struct {
	s   *Service
	dev wire.DeviceID
	st  network.Stream
	res ReconcileResult
}

func (x *exchange) applyMarks(ctx context.Context, recs []markRec) error {
	marks, err := parseMarks(recs)
	if err != nil {
		return err
	}
	n, err := x.s.store.ApplyDeletes(ctx, x.dev, marks, x.s.now())
	if err != nil {
		return err
	}
	x.res.Deletes += n
	x.s.metrics.reconciled.WithLabelValues("delete").Add(float64(n))
	return nil
}

// send streams the envelopes ids (those still held) and then tEnd.
func (x *exchange) send(ctx context.Context, ids []wire.MessageID) error {
	for _, id := range ids {
		e, ok, err := x.s.store.Get(ctx, x.dev, id)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if err := writeFrame(x.st, &frame{Type: tEnvelope, Env: toRec(&e)}); err != nil {
			return err
		}
		x.res.Pushed++
		x.s.metrics.repaired.Inc()
	}
	return writeFrame(x.st, &frame{Type: tEnd})
}

// receive stores envelopes until tEnd. Refusals of single envelopes (expired here, quota) are skipped.
func (x *exchange) receive(ctx context.Context) error {
	for {
		f, err := readFrame(x.st, x.s.maxFrame())
		if err != nil {
			return err
		}
		if ferr := f.err(); ferr != nil {
			return ferr
		}
		switch f.Type {
		case tEnd:
			return nil
		case tEnvelope:
			e, err := fromRec(f.Env)
			if err != nil || e.Recipient != x.dev {
				return errorf(StatusMalformed, "bad envelope in sync")
			}
			kind, err := x.s.store.Put(ctx, &e, x.s.now())
			if err != nil {
				if st := statusOf(err); st == StatusInternal {
					return err
				}
				continue
			}
			if kind == Written {
				x.res.Pulled++
				x.s.metrics.reconciled.WithLabelValues("envelope").Inc()
				x.s.notify(&e)
			}
		default:
			return errorf(StatusMalformed, "frame type %d in sync", f.Type)
		}
	}
}

func (x *exchange) expect(t uint8) (*frame, error) {
	f, err := readFrame(x.st, x.s.maxFrame())
	if err != nil {
		return nil, err
	}
	if ferr := f.err(); ferr != nil {
		return nil, ferr
	}
	if f.Type != t {
		return nil, errorf(StatusMalformed, "frame type %d, want %d", f.Type, t)
	}
	return f, nil
}

// syncWith runs one exchange for dev with replica p, as the initiator.
func (s *Service) syncWith(ctx context.Context, p peer.ID, dev wire.DeviceID) (ReconcileResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*s.lim.RequestTimeout)
	defer cancel()
	st, err := s.host.NewStream(ctx, p, s.proto)
	if err != nil {
		return ReconcileResult{}, err
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { _ = st.Reset() })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = st.SetDeadline(dl)
	}
	x := &exchange{s: s, dev: dev, st: st}
	mine, err := s.store.Summary(ctx, dev)
	if err != nil {
		return x.res, err
	}
	if err := writeFrame(st, &frame{Type: tSync, Device: slices.Clone(dev[:]), IDs: idBytes(mine.IDs),
		Tombstoned: idBytes(mine.Tombstoned)}); err != nil {
		return x.res, err
	}
	f, err := x.expect(tSyncReply)
	if err != nil {
		return x.res, err
	}
	if err := x.applyMarks(ctx, f.Deleted); err != nil {
		return x.res, err
	}
	theirHeld, err := parseIDs(f.IDs, 4*s.lim.MaxCount)
	if err != nil {
		return x.res, err
	}
	theirTomb, err := parseIDs(f.Tombstoned, 4*s.lim.MaxCount)
	if err != nil {
		return x.res, err
	}
	if mine, err = s.store.Summary(ctx, dev); err != nil {
		return x.res, err
	}
	haveAny := idSet(mine.IDs, mine.Tombstoned, markIDs(mine.Deleted))
	var want []wire.MessageID
	for _, id := range theirHeld {
		if _, ok := haveAny[id]; !ok {
			want = append(want, id)
		}
	}
	theirAny := idSet(theirHeld, theirTomb)
	var push []wire.MessageID
	for _, id := range mine.IDs {
		if _, ok := theirAny[id]; !ok {
			push = append(push, id)
		}
	}
	if err := writeFrame(st, &frame{Type: tSyncReply, IDs: idBytes(want),
		Deleted: marksFor(mine.Deleted, idSet(theirHeld))}); err != nil {
		return x.res, err
	}
	if err := x.send(ctx, push); err != nil {
		return x.res, err
	}
	if err := x.receive(ctx); err != nil {
		return x.res, err
	}
	x.res.Exchanges = 1
	return x.res, nil
}

// serveSync answers one exchange as Y.
func (s *Service) serveSync(st network.Stream, f *frame) {
	ctx, cancel := context.WithTimeout(s.ctx, 3*s.lim.RequestTimeout)
	defer cancel()
	_ = st.SetDeadline(s.now().Add(3 * s.lim.RequestTimeout))
	if len(f.Device) != wire.DeviceIDSize {
		_ = writeFrame(st, errFrame(errorf(StatusMalformed, "device")))
		return
	}
	dev := wire.DeviceID(f.Device)
	// Only a node that is itself among the closest nodes of this mailbox (with a margin for views that differ)
	// may compare it with us: nobody else may learn what a mailbox holds.
	cands, err := s.candidates(ctx, dev, s.lim.Replicas+2)
	if err != nil || !slices.Contains(cands, st.Conn().RemotePeer()) {
		s.metrics.refusal(ErrNotReplica)
		_ = writeFrame(st, errFrame(errorf(StatusNotReplica, "not a replica of this mailbox")))
		return
	}
	x := &exchange{s: s, dev: dev, st: st}
	theirHeld, err := parseIDs(f.IDs, 4*s.lim.MaxCount)
	if err != nil {
		_ = writeFrame(st, errFrame(err))
		return
	}
	mine, err := s.store.Summary(ctx, dev)
	if err != nil {
		_ = writeFrame(st, errFrame(errorf(StatusInternal, "%v", err)))
		return
	}
	if err := writeFrame(st, &frame{Type: tSyncReply, IDs: idBytes(mine.IDs), Tombstoned: idBytes(mine.Tombstoned),
		Deleted: marksFor(mine.Deleted, idSet(theirHeld))}); err != nil {
		return
	}
	g, err := x.expect(tSyncReply)
	if err != nil {
		return
	}
	if err := x.applyMarks(ctx, g.Deleted); err != nil {
		_ = st.Reset()
		return
	}
	want, err := parseIDs(g.IDs, 4*s.lim.MaxCount)
	if err != nil {
		_ = st.Reset()
		return
	}
	if err := x.receive(ctx); err != nil {
		_ = st.Reset()
		return
	}
	if err := x.send(ctx, want); err != nil {
		_ = st.Reset()
		return
	}
}
