package cardano

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/blinklabs-io/gouroboros/cbor"
	"github.com/iagon/gridchat/chain"
)

func TestAnchorMetadataRoundTripsThroughCBOR(t *testing.T) {
	n := newTestNode(t)
	a := newTestAnchorer(t, n, newWalletView(n))
	n.Fund(a.Address(), 20_000_000, 1)
	signed, cp := publishedCheckpoint(t)
	ref, err := a.Anchor(context.Background(), signed)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := cbor.Encode(mustAccepted(t, n, ref.TxID).Metadata())
	if err != nil {
		t.Fatal(err)
	}
	if seed := os.Getenv("GRIDCHAT_WRITE_FUZZ_SEED"); seed != "" {
		os.WriteFile(seed, fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", raw), 0o644)
	}
	got, err := ParseMetadataCBOR(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got.Root != cp.Root || got.Size != cp.Size || got.Origin != cp.Origin {
		t.Fatalf("got %+v", got)
	}
	if _, err := ParseMetadataCBOR([]byte{0xa0}); !errors.Is(err, ErrNoAnchor) {
		t.Fatalf("empty metadata: %v", err)
	}
}

func TestRunAnchorsEachNewCheckpointOnce(t *testing.T) {
	n := newTestNode(t)
	a := newTestAnchorer(t, n, newWalletView(n))
	n.Fund(a.Address(), 50_000_000, 1)
	h := openLog(t)
	ticks := make(chan time.Time) // unbuffered: a send returns once Run took the tick
	refs := make(chan chain.AnchorRef, 4)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.Run(ctx, h, ticks, func(r chain.AnchorRef, _ []byte) error { refs <- r; return nil })
	}()
	ticks <- time.Time{}
	r := <-refs
	ticks <- time.Time{} // unchanged head: no new anchor
	ticks <- time.Time{} // ...and the previous tick is fully handled
	cancel()
	<-done
	if len(refs) != 0 || n.AcceptedCount() != 1 {
		t.Fatalf("anchored %d more, node holds %d anchors", len(refs), n.AcceptedCount())
	}
	if _, ok := n.Accepted(r.TxID); !ok {
		t.Fatal("anchor not on chain")
	}
	// The log grows: the next tick anchors the new checkpoint.
	if _, err := h.Publish(context.Background(), chain.Record{Seq: 9, Body: []byte("more")}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	done = make(chan struct{})
	go func() {
		defer close(done)
		a.Run(ctx, h, ticks, func(r chain.AnchorRef, _ []byte) error { refs <- r; return nil })
	}()
	ticks <- time.Time{}
	r2 := <-refs
	cancel()
	<-done
	if r2.Size != r.Size+1 {
		t.Fatalf("second anchor of size %d, want %d", r2.Size, r.Size+1)
	}
}

func FuzzParseMetadataCBOR(f *testing.F) {
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, b []byte) {
		an, err := ParseMetadataCBOR(b)
		if err == nil && len(b) > MaxMetadataSize {
			t.Fatalf("accepted %d bytes of metadata: %+v", len(b), an)
		}
	})
}

// TestAnchoredReceiptNamesTheTransactionHoldingItsCheckpoint runs the whole
// path: the log's head is anchored by Run, the log records the anchor, and a
// receipt re-issued against the anchored checkpoint names the transaction,
// whose metadata on the node commits to exactly that checkpoint note.
func TestAnchoredReceiptNamesTheTransactionHoldingItsCheckpoint(t *testing.T) {
	n := newTestNode(t)
	a := newTestAnchorer(t, n, newWalletView(n))
	n.Fund(a.Address(), 50_000_000, 1)
	l := openLog(t)
	ctx, cancel := context.WithCancel(context.Background())
	ticks := make(chan time.Time)
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx, l, ticks, l.RecordAnchor) }()
	ticks <- time.Time{}
	ticks <- time.Time{} // the first tick is fully handled
	cancel()
	<-done

	rc, err := l.AnchoredReceipt(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	pol := chain.Policy{LogKey: func(string) (notev, error) { return l.Verifier(), nil }}
	if _, err := pol.Verify(rc, chain.Record{Seq: 1, Body: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	an, err := chain.ParseAnchor(rc.Extra)
	if err != nil {
		t.Fatal(err)
	}
	tx, ok := n.Accepted(an.TxID)
	if !ok || an.Chain != "cardano:test" {
		t.Fatalf("anchor %+v not on the node", an)
	}
	md, err := ParseMetadata(tx.Metadata())
	if err != nil {
		t.Fatal(err)
	}
	if md.NoteHash != sha256.Sum256(rc.Checkpoint) {
		t.Fatal("anchored note hash does not match the receipt's checkpoint")
	}
}
