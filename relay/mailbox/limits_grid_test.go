package mailbox_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/node"
	"github.com/iagon/gridchat/relay/mailbox"
	"github.com/iagon/gridchat/wire"
)

// mailboxProtocol returns the mailbox stream protocol nd serves.
func mailboxProtocol(t *testing.T, nd *node.Node) protocol.ID {
	t.Helper()
	for _, p := range nd.Host().Mux().Protocols() {
		if strings.HasSuffix(string(p), "/mailbox/1.0.0") {
			return p
		}
	}
	t.Fatal("node serves no mailbox protocol")
	return ""
}

// waitUntil polls cond until it holds or d passes.
func waitUntil(t *testing.T, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSignedRequestsOutsideMaxClockSkewAreStale: a fetch signed within MaxClockSkew of the replicas' clocks is
// served; one dated further in the past or the future is refused stale.
func TestSignedRequestsOutsideMaxClockSkewAreStale(t *testing.T) {
	const skew = time.Minute
	nodes := gridtest.Swarm(t, 3, noLoops(func(cfg *node.Config) { cfg.Mailbox.Limits.MaxClockSkew = skew }))
	ctx := context.Background()
	b := newDevice(t)
	mb := nodes[0].Mailbox()
	for _, off := range []time.Duration{-2 * skew, 2 * skew} {
		req, err := mailbox.NewFetchRequest(b, false, time.Now().Add(off))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mb.Open(ctx, req); !errors.Is(err, mailbox.ErrStale) {
			t.Fatalf("fetch dated %v off: %v, want stale", off, err)
		}
	}
	for _, off := range []time.Duration{-skew / 2, skew / 2} {
		req, _ := mailbox.NewFetchRequest(b, false, time.Now().Add(off))
		ss, err := mb.Open(ctx, req)
		if err != nil {
			t.Fatalf("fetch dated %v off: %v", off, err)
		}
		ss.Close()
	}
}

// TestReplayCacheSizeFullOfLiveNoncesRefusesBusy: a replica whose replay cache holds ReplayCacheSize unexpired
// nonces refuses further signed requests as busy rather than forgetting a nonce early.
func TestReplayCacheSizeFullOfLiveNoncesRefusesBusy(t *testing.T) {
	const size = 3
	nodes := gridtest.Swarm(t, 3, noLoops(func(cfg *node.Config) { cfg.Mailbox.Limits.ReplayCacheSize = size }))
	ctx := context.Background()
	mb := nodes[0].Mailbox()
	for i := range size {
		req, _ := mailbox.NewFetchRequest(newDevice(t), false, time.Now())
		ss, err := mb.Open(ctx, req)
		if err != nil {
			t.Fatalf("fetch %d within the cache: %v", i, err)
		}
		ss.Close()
	}
	req, _ := mailbox.NewFetchRequest(newDevice(t), false, time.Now())
	if _, err := mb.Open(ctx, req); !errors.Is(err, mailbox.ErrBusy) {
		t.Fatalf("fetch with every replay cache full: %v, want busy", err)
	}
}

// TestMaxSessionsRefusesFetchStreamsOverTheCap: a replica serving MaxSessions fetch streams refuses another as
// busy; once a stream ends, a new one is served.
func TestMaxSessionsRefusesFetchStreamsOverTheCap(t *testing.T) {
	nodes := gridtest.Swarm(t, 3, noLoops(func(cfg *node.Config) { cfg.Mailbox.Limits.MaxSessions = 1 }))
	ctx := context.Background()
	busy := func() float64 { return counter(t, nodes, "gridchat_mailbox_refused_total", "busy") }
	open := func(nd *node.Node) *mailbox.Session {
		t.Helper()
		req, _ := mailbox.NewFetchRequest(newDevice(t), true, time.Now())
		ss, err := nd.Mailbox().Open(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return ss
	}
	// A following fetch through node 0 holds one stream on each of the other two replicas (node 0 serves its
	// own copy without a stream).
	first := open(nodes[0])
	if n := busy(); n != 0 {
		t.Fatalf("%v busy refusals with one fetch open", n)
	}
	// The same through node 1: node 2 is at its cap and refuses; node 0 has room.
	second := open(nodes[1])
	if n := busy(); n != 1 {
		t.Fatalf("%v busy refusals with a second fetch open, want 1 (node 2 at MaxSessions)", n)
	}
	second.Close()
	first.Close()
	// Closing frees the slots (the replica notices the stream end asynchronously).
	waitUntil(t, 5*time.Second, func() bool {
		before := busy()
		ss := open(nodes[1])
		defer ss.Close()
		return busy() == before
	}, "fetch slots to be freed")
}

// TestSubscriberQueueCutsFollowingFetchThatFallsBehind: a following fetch whose reader stops taking envelopes
// has its subscription cut (counted) once SubscriberQueue new envelopes wait for it, instead of blocking puts.
func TestSubscriberQueueCutsFollowingFetchThatFallsBehind(t *testing.T) {
	nodes := gridtest.Swarm(t, 3, noLoops(func(cfg *node.Config) { cfg.Mailbox.Limits.SubscriberQueue = 2 }))
	ctx := context.Background()
	a, b := newDevice(t), newDevice(t)
	req, _ := mailbox.NewFetchRequest(b, true, time.Now())
	ss, err := nodes[0].Mailbox().Open(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	// Nobody calls ss.Next: the session's own buffers fill, then the subscription's queue.
	putAll(t, nodes[0], did(a), did(b), 0, 200)
	if n := counter(t, nodes, "gridchat_mailbox_subscribers_dropped_total", ""); n < 1 {
		t.Fatalf("no subscription cut after 200 unread envelopes with SubscriberQueue 2")
	}
}

// TestHandshakeTimeoutCutsSilentIncomingStream: an incoming mailbox stream that sends no first frame is reset
// after HandshakeTimeout.
func TestHandshakeTimeoutCutsSilentIncomingStream(t *testing.T) {
	const hs = 300 * time.Millisecond
	nodes := gridtest.Swarm(t, 2, noLoops(func(cfg *node.Config) { cfg.Mailbox.Limits.HandshakeTimeout = hs }))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := nodes[0].Host().NewStream(ctx, nodes[1].Host().ID(), mailboxProtocol(t, nodes[1]))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Reset()
	_ = st.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	_, err = st.Read(make([]byte, 1))
	took := time.Since(start)
	if err == nil || errors.Is(err, context.DeadlineExceeded) || took >= 5*time.Second {
		t.Fatalf("silent stream still open after %v (err %v), HandshakeTimeout %v", took, err, hs)
	}
	if took < hs/2 {
		t.Fatalf("silent stream cut after %v, before HandshakeTimeout %v", took, hs)
	}
}

// TestRequestTimeoutBoundsPutToStuckReplica: a replica that accepts a put stream and never answers is given up
// after RequestTimeout; the put is stored by the write quorum of the others.
func TestRequestTimeoutBoundsPutToStuckReplica(t *testing.T) {
	const rt = 500 * time.Millisecond
	nodes := requestTimeoutSwarm(t, rt)
	asked := stall(t, nodes[2])
	a, b := newDevice(t), newDevice(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	start := time.Now()
	stored, err := nodes[0].Mailbox().PutEnvelope(ctx, envelope(t, did(a), did(b), 1))
	took := time.Since(start)
	if err != nil {
		t.Fatalf("put with one stuck replica: %v (after %v)", err, took)
	}
	if len(stored.Receipts) != 2 {
		t.Fatalf("%d receipts, want 2", len(stored.Receipts))
	}
	gaveUpOnStuckReplica(t, "put", took, rt, "RequestTimeout", asked)
}

// stall makes nd swallow every mailbox stream without reading or answering (its streams are reset when the
// test ends) and returns how many it has swallowed.
func stall(t *testing.T, nd *node.Node) func() int { return stallAfter(t, nd, nil) }

// stallAfter is stall for a peer that first plays its part of the protocol with answer (when answer is not
// nil), and then neither reads nor writes. A stream is counted before it is answered (so the count is up to
// date once the other side has the answer); one answer fails on is reset at once.
func stallAfter(t *testing.T, nd *node.Node, answer func(network.Stream) error) func() int {
	var mu sync.Mutex
	var stuck []network.Stream
	nd.Host().SetStreamHandler(mailboxProtocol(t, nd), func(st network.Stream) {
		mu.Lock()
		stuck = append(stuck, st)
		mu.Unlock()
		if answer != nil && answer(st) != nil {
			_ = st.Reset()
		}
	})
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, st := range stuck {
			_ = st.Reset()
		}
	})
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(stuck)
	}
}

// requestTimeoutSwarm starts a swarm of three, without background loops, whose mailboxes give up a request to
// a replica after rt.
func requestTimeoutSwarm(t *testing.T, rt time.Duration) []*node.Node {
	return gridtest.Swarm(t, 3, noLoops(func(cfg *node.Config) { cfg.Mailbox.Limits.RequestTimeout = rt }))
}

// putOne stores one envelope from a new device to another through nd and returns the recipient and the
// envelope.
func putOne(t *testing.T, nd *node.Node) (*e2ee.DeviceKeys, wire.Envelope) {
	t.Helper()
	a, b := newDevice(t), newDevice(t)
	return b, putAll(t, nd, did(a), did(b), 0, 1)[0]
}

// gaveUpOnStuckReplica fails unless op, which took took with one replica stalled, waited for that replica about
// limit (named name: not less, and not over 4 s) and asked it at all.
func gaveUpOnStuckReplica(t *testing.T, op string, took, limit time.Duration, name string, asked func() int) {
	t.Helper()
	if took < limit || took > 4*time.Second {
		t.Fatalf("%s with one stuck replica took %v, want about %s %v", op, took, name, limit)
	}
	if asked() == 0 {
		t.Fatal("the stuck replica was never asked")
	}
}

// TestReplicasBoundsTheCopiesOfAMailbox: with Replicas 2 in a swarm of 4, an envelope is written to exactly 2
// nodes and the put carries 2 receipts.
func TestReplicasBoundsTheCopiesOfAMailbox(t *testing.T) {
	nodes := gridtest.Swarm(t, 4, noLoops(func(cfg *node.Config) {
		cfg.Mailbox.Limits.Replicas = 2
		cfg.Mailbox.Limits.WriteQuorum = 2
	}))
	ctx := context.Background()
	a, b := newDevice(t), newDevice(t)
	stored, err := nodes[0].Mailbox().PutEnvelope(ctx, envelope(t, did(a), did(b), 1))
	if err != nil {
		t.Fatal(err)
	}
	if len(stored.Receipts) != 2 {
		t.Fatalf("%d receipts, want Replicas 2", len(stored.Receipts))
	}
	held := 0
	for _, c := range copies(t, nodes, did(b)) {
		held += c
	}
	if held != 2 {
		t.Fatalf("%d copies in the swarm, want Replicas 2", held)
	}
	if reps, err := nodes[0].Mailbox().Replicas(ctx, did(b)); err != nil || len(reps) != 2 {
		t.Fatalf("replicas %v %v, want 2", reps, err)
	}
}

// TestWriteQuorumRefusesPutStoredByTooFewReplicas: with WriteQuorum 3 of 3 replicas and one replica stuck, a put
// that only two replicas stored is refused no_quorum.
func TestWriteQuorumRefusesPutStoredByTooFewReplicas(t *testing.T) {
	nodes := gridtest.Swarm(t, 3, noLoops(func(cfg *node.Config) {
		cfg.Mailbox.Limits.WriteQuorum = 3
		cfg.Mailbox.Limits.RequestTimeout = 300 * time.Millisecond
	}))
	stall(t, nodes[2])
	a, b := newDevice(t), newDevice(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	if _, err := nodes[0].Mailbox().PutEnvelope(ctx, envelope(t, did(a), did(b), 1)); !errors.Is(err, mailbox.ErrNoQuorum) {
		t.Fatalf("put stored by 2 of a quorum of 3: %v, want no quorum", err)
	}
}

// TestExpiryIntervalSweepsExpiredEnvelopes: with the loops running, the TTL sweep runs every ExpiryInterval and
// removes envelopes older than the TTL from every replica without anyone fetching.
func TestExpiryIntervalSweepsExpiredEnvelopes(t *testing.T) {
	nodes := gridtest.Swarm(t, 3, gridtest.Configure(func(_ int, cfg *node.Config) {
		cfg.Mailbox.Limits.TTL = time.Second
		cfg.Mailbox.Limits.ExpiryInterval = 200 * time.Millisecond
	}))
	a, b := newDevice(t), newDevice(t)
	putAll(t, nodes[0], did(a), did(b), 0, 3)
	waitUntil(t, 5*time.Second, func() bool {
		for _, c := range copies(t, nodes, did(b)) {
			if c != 0 {
				return false
			}
		}
		return true
	}, "the sweep to expire every copy")
	if n := counter(t, nodes, "gridchat_mailbox_expired_total", ""); n < 3 {
		t.Fatalf("%v expiries counted, want at least 3", n)
	}
}

// TestRequestTimeoutBoundsDeleteToStuckReplica: a replica that accepts a delete stream and never answers is
// given up after RequestTimeout; the delete succeeds on the other replicas.
func TestRequestTimeoutBoundsDeleteToStuckReplica(t *testing.T) {
	const rt = 300 * time.Millisecond
	nodes := requestTimeoutSwarm(t, rt)
	b, env := putOne(t, nodes[0])
	asked := stall(t, nodes[2])
	req, err := mailbox.NewDeleteRequest(b, []wire.MessageID{env.MessageID}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	start := time.Now()
	n, err := nodes[0].Mailbox().Delete(ctx, req)
	took := time.Since(start)
	if err != nil || n != 2 {
		t.Fatalf("delete with one stuck replica: %d deleted, %v (after %v), want 2", n, err, took)
	}
	gaveUpOnStuckReplica(t, "delete", took, rt, "RequestTimeout", asked)
}

// TestRequestTimeoutBoundsFetchFromStuckReplica: a replica that accepts a fetch stream and never answers is
// given up after RequestTimeout; the fetch opens on the other replicas and delivers the mailbox.
func TestRequestTimeoutBoundsFetchFromStuckReplica(t *testing.T) {
	const rt = 300 * time.Millisecond
	nodes := requestTimeoutSwarm(t, rt)
	b, env := putOne(t, nodes[0])
	asked := stall(t, nodes[2])
	req, err := mailbox.NewFetchRequest(b, false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	start := time.Now()
	ss, err := nodes[0].Mailbox().Open(ctx, req)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("fetch with one stuck replica: %v (after %v)", err, took)
	}
	defer ss.Close()
	gaveUpOnStuckReplica(t, "fetch", took, rt, "RequestTimeout", asked)
	it, err := ss.Next(ctx)
	if err != nil || it.Envelope == nil || it.Envelope.MessageID != env.MessageID {
		t.Fatalf("first item %+v, %v: want the stored envelope", it, err)
	}
	if _, err := ss.Next(ctx); !errors.Is(err, io.EOF) {
		t.Fatalf("after the snapshot: %v, want EOF", err)
	}
}

// TestRequestTimeoutBoundsAntiEntropyExchangeWithStuckReplica: an anti-entropy exchange with a replica that
// accepts the stream and never answers is given up after 3×RequestTimeout (one exchange is three requests);
// the round still reconciles with the other replica and reports the stuck one.
func TestRequestTimeoutBoundsAntiEntropyExchangeWithStuckReplica(t *testing.T) {
	const rt = 200 * time.Millisecond
	nodes := requestTimeoutSwarm(t, rt)
	putOne(t, nodes[0])
	asked := stall(t, nodes[2])
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	start := time.Now()
	res, err := nodes[0].Mailbox().Reconcile(ctx)
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), nodes[2].Host().ID().String()) {
		t.Fatalf("round with one stuck replica: %v, want an error naming it", err)
	}
	if res.Mailboxes != 1 || res.Exchanges != 1 {
		t.Fatalf("round with one stuck replica: %+v, want 1 mailbox and 1 exchange", res)
	}
	gaveUpOnStuckReplica(t, "round", took, 3*rt, "3×RequestTimeout", asked)
}

// TestRequestTimeoutCutsAcksToReplicaThatStopsReading: when the replica of a fetch has answered it and then
// stops reading, an Ack blocked on the full stream is cut after RequestTimeout and the replica dropped from the
// session: with no other replica left, Ack fails no_quorum instead of blocking.
func TestRequestTimeoutCutsAcksToReplicaThatStopsReading(t *testing.T) {
	const rt = 300 * time.Millisecond
	// One replica per mailbox, so that no other replica's deletes slow the acks down.
	nodes := gridtest.Swarm(t, 3, noLoops(func(cfg *node.Config) {
		cfg.Mailbox.Limits.RequestTimeout = rt
		cfg.Mailbox.Limits.Replicas = 1
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// A device whose mailbox nodes[0] places on nodes[2] alone (one in three is).
	var b *e2ee.DeviceKeys
	for b == nil {
		dk := newDevice(t)
		reps, err := nodes[0].Mailbox().Replicas(ctx, did(dk))
		if err != nil {
			t.Fatal(err)
		}
		if len(reps) == 1 && reps[0] == nodes[2].Host().ID() {
			b = dk
		}
	}
	// nodes[2] reads the fetch, says it holds nothing, and never reads again.
	asked := stallAfter(t, nodes[2], func(st network.Stream) error {
		if _, err := mailbox.ReadFrameType(st); err != nil {
			return err
		}
		return mailbox.WriteEmptyFrame(st, mailbox.FrameCaughtUp)
	})
	req, err := mailbox.NewFetchRequest(b, false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ss, err := nodes[0].Mailbox().Open(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	if reps := ss.Replicas(); len(reps) != 1 || reps[0] != nodes[2].Host().ID() || asked() != 1 {
		t.Fatalf("fetch from %v, the stalling replica took %d fetches: want it alone, once", reps, asked())
	}
	// 64 full batches of ids (about 17 KiB each) are over twice the largest initial stream receive window of
	// the grid's transports (QUIC's 512 KiB; yamux's is 256 KiB): the writes block once it is full.
	ids := make([]wire.MessageID, 64*1024)
	for i := range ids {
		copy(ids[i][:], fmt.Sprintf("ack %012d", i))
	}
	start := time.Now()
	acked := make(chan error, 1)
	go func() { acked <- ss.Ack(ctx, ids...) }()
	select {
	case err := <-acked:
		if !errors.Is(err, mailbox.ErrNoQuorum) {
			t.Fatalf("ack to a replica that stopped reading: %v, want no_quorum", err)
		}
	case <-time.After(5 * time.Second):
		// ss.Close (deferred) resets the stream, which ends the blocked Ack.
		t.Fatalf("ack to a replica that stopped reading still blocked after 5 s (RequestTimeout %v)", rt)
	}
	// Not before RequestTimeout: a write without a deadline of its own would fail early, on the one left from
	// the fetch's first frame.
	if took := time.Since(start); took < rt {
		t.Fatalf("ack failed after %v, before RequestTimeout %v", took, rt)
	}
}

// TestRequestTimeoutCutsFetchWhoseGatewayStopsReading: a replica serving a fetch to a gateway that stops
// reading resets the stream once a write has been blocked for RequestTimeout.
func TestRequestTimeoutCutsFetchWhoseGatewayStopsReading(t *testing.T) {
	const rt = 300 * time.Millisecond
	nodes := requestTimeoutSwarm(t, rt)
	a, b := newDevice(t), newDevice(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Sixteen envelopes of 60 KiB are nearly twice the largest initial stream receive window of the grid's
	// transports (QUIC's 512 KiB; yamux's is 256 KiB).
	for i := range 16 {
		env := envelope(t, did(a), did(b), i)
		env.Ciphertext = make([]byte, 60<<10)
		if _, err := nodes[0].Mailbox().PutEnvelope(ctx, env); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	gw, replica := nodes[0].Host(), nodes[1].Host()
	proto := mailboxProtocol(t, nodes[1])
	fetches := func() int {
		n := 0
		for _, c := range replica.Network().ConnsToPeer(gw.ID()) {
			for _, st := range c.GetStreams() {
				if st.Protocol() == proto {
					n++
				}
			}
		}
		return n
	}
	req, err := mailbox.NewFetchRequest(b, false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	st, err := gw.NewStream(ctx, replica.ID(), proto)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Reset()
	start := time.Now()
	if err := mailbox.WriteFetchFrame(st, req); err != nil {
		t.Fatal(err)
	}
	// The gateway never reads. The replica's taking the stream and its cut are asynchronous; poll for each
	// with a deadline.
	waitUntil(t, 5*time.Second, func() bool { return fetches() == 1 }, "the replica to serve the fetch")
	waitUntil(t, 5*time.Second, func() bool { return fetches() == 0 }, "the replica to cut the unread fetch")
	if took := time.Since(start); took < rt {
		t.Fatalf("fetch cut after %v, before RequestTimeout %v", took, rt)
	}
	// What the replica wrote before the cut may still be buffered here (QUIC delivers it); the end is a reset.
	_ = st.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, st); !errors.Is(err, network.ErrReset) {
		t.Fatalf("gateway's read after the cut ended with %v, want the stream reset", err)
	}
}

// TestRequestTimeoutCutsAntiEntropyExchangeWhosePeerStalls: a replica answering an anti-entropy exchange whose
// initiator stops after the first round trip ends the exchange after 3×RequestTimeout.
func TestRequestTimeoutCutsAntiEntropyExchangeWhosePeerStalls(t *testing.T) {
	const rt = 200 * time.Millisecond
	nodes := requestTimeoutSwarm(t, rt)
	b, _ := putOne(t, nodes[0])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// nodes[0] plays the initiating replica (it is one of the mailbox's closest nodes in a swarm of three).
	st, err := nodes[0].Host().NewStream(ctx, nodes[1].Host().ID(), mailboxProtocol(t, nodes[1]))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Reset()
	start := time.Now()
	if err := mailbox.WriteSyncFrame(st, did(b)); err != nil {
		t.Fatal(err)
	}
	_ = st.SetReadDeadline(time.Now().Add(5 * time.Second))
	if typ, err := mailbox.ReadFrameType(st); err != nil || typ != mailbox.FrameSyncReply {
		t.Fatalf("first answer: frame type %d, %v; want a sync reply", typ, err)
	}
	// The initiator sends nothing more: the replica must end the stream on its own.
	_, err = st.Read(make([]byte, 1))
	took := time.Since(start)
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) || took >= 5*time.Second {
		t.Fatalf("stalled exchange still open after %v (err %v), want it ended after 3×RequestTimeout %v",
			took, err, 3*rt)
	}
	if took < 3*rt {
		t.Fatalf("stalled exchange ended after %v, before 3×RequestTimeout %v", took, 3*rt)
	}
}
