package witness

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iagon/gridchat/chain"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/mod/sumdb/note"
)

func TestThousandWitnessedPublicationsVerifyOffline(t *testing.T) {
	nodes := newSwarm(t, 3)
	a := nodes[0]
	startLog(t, a, nodes[1:], 2)
	ctx := context.Background()
	const n = 1000
	receipts := make([][]byte, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			rc, err := a.log.Publish(ctx, record(i))
			if err != nil {
				errs <- err
				return
			}
			receipts[i] = rc.Marshal()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// A client with only the receipts, the records and the witness keys.
	pol := policy(t, 2, nodes[1], nodes[2])
	cps := map[uint64]chain.Checkpoint{}
	for i, b := range receipts {
		rc, err := chain.ParseReceipt(b)
		if err != nil {
			t.Fatal(err)
		}
		cp, err := pol.Verify(rc, record(i))
		if err != nil {
			t.Fatalf("receipt %d: %v", i, err)
		}
		cps[cp.Size] = cp
	}
	t.Logf("%d receipts over %d witnessed checkpoints", n, len(cps))
	for _, x := range cps {
		for _, y := range cps {
			if x.Size >= y.Size {
				continue
			}
			p, err := a.log.ConsistencyProof(ctx, x.Size, y.Size)
			if err != nil {
				t.Fatal(err)
			}
			if err := chain.VerifyConsistency(x, y, p); err != nil {
				t.Fatalf("witnessed checkpoints %d and %d: %v", x.Size, y.Size, err)
			}
		}
	}
}

func TestReceiptBelowQuorumOrWithForgedCosignatureIsRefused(t *testing.T) {
	nodes := newSwarm(t, 4)
	a := nodes[0]
	startLog(t, a, nodes[1:3], 2)
	rc, err := a.log.Publish(context.Background(), record(1))
	if err != nil {
		t.Fatal(err)
	}
	pol2 := policy(t, 2, nodes[1], nodes[2])
	pol3 := policy(t, 3, nodes[1], nodes[2], nodes[3])
	if _, err := pol2.Verify(rc, record(1)); err != nil {
		t.Fatal(err)
	}
	// Three trusted witnesses, quorum 3: only two cosigned.
	if _, err := pol3.Verify(rc, record(1)); !errors.Is(err, chain.ErrQuorum) {
		t.Fatalf("below quorum: %v", err)
	}
	lines := strings.SplitAfter(string(rc.Checkpoint), "\n")
	var cosig []int
	for i, l := range lines {
		if strings.HasPrefix(l, "— "+WitnessNamePrefix) {
			cosig = append(cosig, i)
		}
	}
	if len(cosig) != 2 {
		t.Fatalf("receipt has %d cosignatures, want 2", len(cosig))
	}
	stripped := *rc
	stripped.Checkpoint = []byte(strings.Join(append(append([]string{}, lines[:cosig[1]]...), lines[cosig[1]+1:]...), ""))
	if _, err := pol2.Verify(&stripped, record(1)); !errors.Is(err, chain.ErrQuorum) {
		t.Fatalf("one cosignature stripped: %v", err)
	}
	// A cosignature line with a flipped signature byte.
	forged := *rc
	l := lines[cosig[0]]
	sp := strings.LastIndex(l, " ")
	sig, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(l[sp+1:]))
	sig[len(sig)-1] ^= 1
	fl := append([]string{}, lines...)
	fl[cosig[0]] = l[:sp+1] + base64.StdEncoding.EncodeToString(sig) + "\n"
	forged.Checkpoint = []byte(strings.Join(fl, ""))
	if _, err := pol2.Verify(&forged, record(1)); !errors.Is(err, chain.ErrBadSignature) {
		t.Fatalf("forged cosignature: %v", err)
	}
}

func TestEquivocatingLogIsDetectedBySwarmWithinFiveSeconds(t *testing.T) {
	nodes := newSwarm(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	startLog(t, a, nodes[1:], 2)
	ctx := context.Background()
	var last *chain.Receipt
	for i := range 5 {
		rc, err := a.log.Publish(ctx, record(i))
		if err != nil {
			t.Fatal(err)
		}
		last = rc
	}
	pol := policy(t, 2, b, c)
	cp, err := pol.OpenCheckpoint(last.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}

	// The test seam: node a holds its log key and signs a second checkpoint of
	// the same size with another root, then gossips it as its log would.
	signer, err := chain.NewLogSigner(cp.Origin, a.key)
	if err != nil {
		t.Fatal(err)
	}
	fork := cp
	fork.Root[0] ^= 0xff
	forked := signNote(t, signer, fork.Text())
	start := time.Now()
	if err := a.witness.Announce(ctx, 0, nil, forked); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "split view detected by b and c", func() bool {
		return b.witness.Distrusted(cp.Origin) && c.witness.Distrusted(cp.Origin)
	})
	t.Logf("split view detected by both witnesses in %v", time.Since(start))

	for _, w := range []*node{b, c} {
		if got := counterValue(t, w.witness.splitViews); got != 1 {
			t.Errorf("split view counter = %v, want 1", got)
		}
		// The evidence, as the gateway serves it: both notes signed by the log.
		rr := httptest.NewRecorder()
		w.witness.EvidenceHandler().ServeHTTP(rr, httptest.NewRequest("GET", "/", nil))
		var ev []Evidence
		if err := json.Unmarshal(rr.Body.Bytes(), &ev); err != nil || len(ev) != 1 {
			t.Fatalf("evidence %q: %v", rr.Body.String(), err)
		}
		if ev[0].Origin != cp.Origin || ev[0].Reason != "same-size" {
			t.Fatalf("evidence %+v", ev[0])
		}
		lp := chain.Policy{LogKey: PeerLogKey}
		x, err1 := lp.OpenCheckpoint([]byte(ev[0].CheckpointA))
		y, err2 := lp.OpenCheckpoint([]byte(ev[0].CheckpointB))
		if err1 != nil || err2 != nil || x.Size != y.Size || x.Root == y.Root {
			t.Fatalf("evidence does not prove a split view: %v %v %+v %+v", err1, err2, x, y)
		}
	}

	// The witnesses refuse to cosign the log any further.
	if _, err := a.log.Publish(ctx, record(99)); !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("publish after split view: %v", err)
	}
	// And a client that asks b refuses the log's receipts.
	pol.Distrusted = b.witness.Distrusted
	if _, err := pol.Verify(last, record(4)); !errors.Is(err, chain.ErrDistrusted) {
		t.Fatalf("receipt of a distrusted log: %v", err)
	}
	// The distrust survives a restart of the witness.
	b.witness.Close()
	b2 := &node{host: b.host, key: b.key, ps: b.ps, store: b.store, reg: prometheus.NewRegistry()}
	startWitness(t, b2)
	if !b2.witness.Distrusted(cp.Origin) {
		t.Fatal("restarted witness trusts the log again")
	}
}

func TestInconsistentCheckpointFromTheLogIsSplitViewButNotFromOthers(t *testing.T) {
	nodes := newSwarm(t, 3)
	a, b, mallory := nodes[0], nodes[1], nodes[2]
	startLog(t, a, nodes[1:2], 1)
	ctx := context.Background()
	var cp chain.Checkpoint
	for i := range 3 {
		rc, err := a.log.Publish(ctx, record(i))
		if err != nil {
			t.Fatal(err)
		}
		pol := policy(t, 1, b)
		if cp, err = pol.OpenCheckpoint(rc.Checkpoint); err != nil {
			t.Fatal(err)
		}
	}
	signer, err := chain.NewLogSigner(cp.Origin, a.key)
	if err != nil {
		t.Fatal(err)
	}
	bigger := chain.Checkpoint{Origin: cp.Origin, Size: cp.Size + 5}
	bigger.Root[3] = 7
	forked := signNote(t, signer, bigger.Text())
	bogus := [][]byte{bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)}
	req := &request{Old: cp.Size, Proof: bogus, Checkpoint: forked}

	// Anyone may relay a log's checkpoint; a bad proof from a stranger is
	// refused but does not condemn the log.
	mc := mallory.witness.NewCosigner(nil, 0)
	resp, err := mc.call(ctx, b.host.ID(), req)
	if err != nil || resp.Status != StatusInconsistent {
		t.Fatalf("stranger's bad proof: %v %+v", err, resp)
	}
	if b.witness.Distrusted(cp.Origin) {
		t.Fatal("a stranger framed the log")
	}
	// The log itself signing and submitting it is a split view.
	ac := a.witness.NewCosigner(nil, 0)
	resp, err = ac.call(ctx, b.host.ID(), req)
	if err != nil || resp.Status != StatusInconsistent {
		t.Fatalf("log's bad proof: %v %+v", err, resp)
	}
	if !b.witness.Distrusted(cp.Origin) {
		t.Fatal("log's inconsistent checkpoint not recorded as a split view")
	}
	resp, err = ac.call(ctx, b.host.ID(), &request{Old: cp.Size, Checkpoint: forked})
	if err != nil || resp.Status != StatusDistrusted {
		t.Fatalf("distrusted log: %v %+v", err, resp)
	}
}

func TestWitnessRefusesBadRequests(t *testing.T) {
	nodes := newSwarm(t, 2)
	a, b := nodes[0], nodes[1]
	startLog(t, a, nodes[1:], 1)
	ctx := context.Background()
	if _, err := a.log.Publish(ctx, record(0)); err != nil {
		t.Fatal(err)
	}
	signed, _, err := a.log.PublishedCheckpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lp := chain.Policy{LogKey: PeerLogKey}
	cp, err := lp.OpenCheckpoint(signed)
	if err != nil {
		t.Fatal(err)
	}
	other, err := chain.NewLogSigner(cp.Origin, b.key)
	if err != nil {
		t.Fatal(err)
	}
	ac := a.witness.NewCosigner(nil, 0)
	cases := []struct {
		name string
		req  *request
		want int
	}{
		{"stale old size", &request{Old: 0, Checkpoint: signed}, StatusConflict},
		{"wrong log key", &request{Old: cp.Size, Checkpoint: signNote(t, other, cp.Text())}, StatusBadSignature},
		{"unknown origin", &request{Old: 0, Checkpoint: signNote(t, mustSigner(t, "example.com/log", b.key), "example.com/log\n1\n"+base64.StdEncoding.EncodeToString(make([]byte, 32))+"\n")}, StatusBadSignature},
		{"same checkpoint again", &request{Old: cp.Size, Checkpoint: signed}, StatusOK},
	}
	for _, tc := range cases {
		resp, err := ac.call(ctx, b.host.ID(), tc.req)
		if err != nil || resp.Status != tc.want {
			t.Errorf("%s: %v %+v, want %d", tc.name, err, resp, tc.want)
		}
	}
	// A frame over the size limit is refused before it is read.
	s, err := a.host.NewStream(ctx, b.host.ID(), ProtocolID)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := writeFrame(s, make([]byte, DefaultLimits().MaxMessage+1)); err != nil {
		t.Fatal(err)
	}
	rb, err := readFrame(s, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := parseResponse(rb); err != nil || r.Status != StatusMalformed {
		t.Fatalf("oversized frame: %v %+v", err, r)
	}
}

func mustSigner(t *testing.T, origin string, key []byte) note.Signer {
	s, err := chain.NewLogSigner(origin, key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func counterValue(t *testing.T, c interface{ Write(*dto.Metric) error }) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func TestLogShowingWitnessesDifferentCheckpointsIsCaughtByTheirGossip(t *testing.T) {
	nodes := newSwarm(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	ctx := context.Background()
	origin := LogOrigin(a.host.ID())
	signer, err := chain.NewLogSigner(origin, a.key)
	if err != nil {
		t.Fatal(err)
	}
	// The log never gossips: it privately shows b one tree and c another of
	// the same size.
	x := chain.Checkpoint{Origin: origin, Size: 4}
	x.Root[0] = 1
	y := x
	y.Root[0] = 2
	ac := a.witness.NewCosigner(nil, 0)
	start := time.Now()
	for _, tc := range []struct {
		to *node
		cp chain.Checkpoint
	}{{b, x}, {c, y}} {
		resp, err := ac.call(ctx, tc.to.host.ID(), &request{Old: 0, Checkpoint: signNote(t, signer, tc.cp.Text())})
		// c may already have b's gossip and refuse at once.
		if err != nil || resp.Status != StatusOK && !(tc.to == c && resp.Status == StatusDistrusted) {
			t.Fatalf("cosign: %v %+v", err, resp)
		}
	}
	waitFor(t, 20*time.Second, "b and c compare their cosigned checkpoints", func() bool {
		return b.witness.Distrusted(origin) && c.witness.Distrusted(origin)
	})
	t.Logf("private split view detected in %v", time.Since(start))
}

func TestWitnessCosignsAtMostMaxLogs(t *testing.T) {
	nodes := newSwarm(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	b.witness.Close()
	b2 := &node{host: b.host, key: b.key, ps: b.ps, store: b.store, reg: prometheus.NewRegistry()}
	w, err := New(context.Background(), Config{Host: b.host, PubSub: b.ps, Datastore: b.store, Key: b.key,
		Registerer: b2.reg, Limits: Limits{MaxLogs: 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	ctx := context.Background()
	for i, n := range []*node{a, c} {
		origin := LogOrigin(n.host.ID())
		cp := chain.Checkpoint{Origin: origin, Size: 1}
		resp, err := n.witness.NewCosigner(nil, 0).call(ctx, b.host.ID(), &request{Checkpoint: signNote(t, mustSigner(t, origin, n.key), cp.Text())})
		want := StatusOK
		if i == 1 {
			want = StatusFull
		}
		if err != nil || resp.Status != want {
			t.Fatalf("log %d: %v %+v, want %d", i, err, resp, want)
		}
	}
}
