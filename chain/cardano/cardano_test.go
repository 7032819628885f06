package cardano

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	apollo "github.com/Salvionied/apollo/v2"
	"github.com/blinklabs-io/gouroboros/ledger/babbage"
	"github.com/blinklabs-io/gouroboros/ledger/common"
	"github.com/blinklabs-io/gouroboros/ledger/mary"
	"github.com/iagon/gridchat/chain"
	"github.com/iagon/gridchat/chain/tlog"
)

// openLog opens a real log with a few entries.
func openLog(t *testing.T) *tlog.Log {
	t.Helper()
	l, err := tlog.Open(context.Background(), tlog.Config{Dir: t.TempDir(), Origin: "gridchat.grid/log/12D3KooWAnchorTestOriginThatIsLongerThanSixtyFourBytes", Key: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, 32))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	for i := range 3 {
		if _, err := l.Publish(context.Background(), chain.Record{Seq: uint64(i), Body: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// publishedCheckpoint returns a real signed checkpoint of a log with a few
// entries.
func publishedCheckpoint(t *testing.T) ([]byte, chain.Checkpoint) {
	t.Helper()
	l := openLog(t)
	signed, err := l.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	pol := chain.Policy{LogKey: func(string) (notev, error) { return l.Verifier(), nil }}
	cp, err := pol.OpenCheckpoint(signed)
	if err != nil {
		t.Fatal(err)
	}
	return signed, cp
}

func newTestAnchorer(t *testing.T, n *testNode, view *wallet) *Anchorer {
	t.Helper()
	a, err := New(Config{
		ChainContext: view,
		Submitter:    &SocketSubmitter{Path: n.Socket(), NetworkMagic: testMagic},
		Key:          ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32)),
		Chain:        "cardano:test",
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAnchorTransactionIsAcceptedAndMetadataHoldsCheckpointRoot(t *testing.T) {
	n := newTestNode(t)
	view := newWalletView(n)
	a := newTestAnchorer(t, n, view)
	n.Fund(a.Address(), 20_000_000, 1)
	signed, cp := publishedCheckpoint(t)

	ref, err := a.Anchor(context.Background(), signed)
	if err != nil {
		t.Fatalf("anchor: %v (node rejections: %v)", err, n.Rejected())
	}
	tx, ok := n.Accepted(ref.TxID)
	if !ok {
		t.Fatalf("node did not apply tx %s", ref.TxID)
	}
	got, err := ParseMetadata(tx.Metadata())
	if err != nil {
		t.Fatal(err)
	}
	if got.Root != cp.Root || got.Size != cp.Size || got.Origin != cp.Origin || got.NoteHash != sha256.Sum256(signed) {
		t.Fatalf("metadata read back %+v, want %+v", got, cp)
	}
	if ref.Size != cp.Size || !bytes.Equal(ref.Root, cp.Root[:]) {
		t.Fatalf("anchor ref %+v", ref)
	}
	// The wallet spent its UTxO: a second anchor spends the change.
	if _, err := a.Anchor(context.Background(), signed); err != nil {
		t.Fatalf("second anchor from change: %v", err)
	}
	if n.AcceptedCount() != 2 {
		t.Fatalf("%d transactions applied, want 2", n.AcceptedCount())
	}
}

func TestNodeRefusesUnsignedUnderfundedExpiredAndDoubleSpentAnchors(t *testing.T) {
	n := newTestNode(t)
	view := newWalletView(n)
	a := newTestAnchorer(t, n, view)
	funded := n.Fund(a.Address(), 20_000_000, 1)
	signed, cp := publishedCheckpoint(t)
	sub := &SocketSubmitter{Path: n.Socket(), NetworkMagic: testMagic}
	ctx := context.Background()

	t.Run("unsigned", func(t *testing.T) {
		b, err := a.build(ctx, Metadata(cp, signed))
		if err != nil {
			t.Fatal(err)
		}
		raw, err := b.GetTxCbor()
		if err != nil {
			t.Fatal(err)
		}
		if err := sub.Submit(ctx, raw); !errors.Is(err, ErrRejected) {
			t.Fatalf("unsigned anchor: %v", err)
		}
		lastRejection(t, n, "missing vkey witness")
	})
	t.Run("signed by another key", func(t *testing.T) {
		b, err := a.build(ctx, Metadata(cp, signed))
		if err != nil {
			t.Fatal(err)
		}
		b, err = b.SignWithSkey(bytes.Repeat([]byte{9}, 32))
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := b.GetTxCbor()
		if err := sub.Submit(ctx, raw); !errors.Is(err, ErrRejected) {
			t.Fatalf("anchor signed by a stranger: %v", err)
		}
		lastRejection(t, n, "missing vkey witness")
	})
	t.Run("underfunded", func(t *testing.T) {
		// The wallet believes its UTxO holds 50 ADA; the ledger knows 20.
		inflated := common.Utxo{Id: funded.Id, Output: babbage.BabbageTransactionOutput{
			OutputAddress: a.Address(), OutputAmount: mary.MaryTransactionOutputValue{Amount: 50_000_000}}}
		view.Override([]common.Utxo{inflated})
		defer view.Override(nil)
		b, err := apollo.New(view).SetWallet(a.wallet).AddLoadedUTxOs(inflated).
			PayToAddress(a.Address(), 40_000_000).SetShelleyMetadata(Metadata(cp, signed)).
			SetValidityStart(1000).SetTtl(2000).Complete()
		if err != nil {
			t.Fatal(err)
		}
		if b, err = b.Sign(); err != nil {
			t.Fatal(err)
		}
		raw, _ := b.GetTxCbor()
		if err := sub.Submit(ctx, raw); !errors.Is(err, ErrRejected) {
			t.Fatalf("underfunded anchor: %v", err)
		}
		lastRejection(t, n, "value not conserved")
	})
	t.Run("expired", func(t *testing.T) {
		raw, _, err := a.BuildTx(ctx, signed)
		if err != nil {
			t.Fatal(err)
		}
		n.AdvanceSlot(10_000)
		defer n.AdvanceSlot(-10_000)
		if err := sub.Submit(ctx, raw); !errors.Is(err, ErrRejected) {
			t.Fatalf("expired anchor: %v", err)
		}
		lastRejection(t, n, "expired")
	})
	if n.AcceptedCount() != 0 {
		t.Fatalf("node applied %d bad transactions", n.AcceptedCount())
	}

	t.Run("double spend", func(t *testing.T) {
		raw, id, err := a.BuildTx(ctx, signed)
		if err != nil {
			t.Fatal(err)
		}
		if err := sub.Submit(ctx, raw); err != nil {
			t.Fatalf("valid anchor: %v", err)
		}
		if _, ok := n.Accepted(hex.EncodeToString(id.Bytes())); !ok {
			t.Fatal("valid anchor not applied")
		}
		if err := sub.Submit(ctx, raw); !errors.Is(err, ErrRejected) {
			t.Fatalf("same anchor twice: %v", err)
		}
		lastRejection(t, n, "bad input")
	})
}

// lastRejection checks that the node refused the last transaction for the
// expected ledger rule.
func lastRejection(t *testing.T, n *testNode, want string) {
	t.Helper()
	rejected := n.Rejected()
	if len(rejected) == 0 {
		t.Fatal("no rejection recorded")
	}
	if got := rejected[len(rejected)-1].Error(); !strings.Contains(strings.ToLower(got), want) {
		t.Fatalf("rejected for %q, want %q", got, want)
	}
}
