package cardano

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/blinklabs-io/gouroboros/ledger"
)

// blockfrostFront serves the Blockfrost tx/submit route in front of the
// validating test node, the way a Blockfrost-compatible gateway fronts a
// Cardano node.
func blockfrostFront(t *testing.T, n *testNode) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/api/v0/tx/submit" || r.Header.Get("Content-Type") != "application/cbor" || r.Header.Get("project_id") != "preprodTEST" {
			http.Error(w, "bad request shape", http.StatusNotFound)
			return
		}
		raw, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := n.Submit(ledger.EraIdConway, raw); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		tx, _ := ledger.NewTransactionFromCbor(ledger.TxTypeConway, raw)
		json.NewEncoder(w).Encode(hex.EncodeToString(tx.Hash().Bytes()))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestBlockfrostSubmitterAnchorsAndReportsRejections(t *testing.T) {
	n := newTestNode(t)
	view := newWalletView(n)
	srv := blockfrostFront(t, n)
	a := newTestAnchorer(t, n, view)
	a.cfg.Submitter = &HTTPSubmitter{BaseURL: srv.URL + "/api/v0", ProjectID: "preprodTEST"}
	n.Fund(a.Address(), 20_000_000, 1)
	signed, cp := publishedCheckpoint(t)
	ref, err := a.Anchor(context.Background(), signed)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseMetadata(mustAccepted(t, n, ref.TxID).Metadata())
	if err != nil || got.Root != cp.Root {
		t.Fatalf("anchored %+v: %v", got, err)
	}
	// The same transaction again spends spent inputs.
	raw := mustAccepted(t, n, ref.TxID).Cbor()
	if len(raw) == 0 {
		t.Fatal("no stored CBOR")
	}
	if err := a.cfg.Submitter.Submit(context.Background(), raw); !errors.Is(err, ErrRejected) {
		t.Fatalf("double spend through HTTP: %v", err)
	}
	lastRejection(t, n, "bad input")
}
