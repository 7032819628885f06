package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/mod/sumdb/note"

	"github.com/iagon/gridchat/chain"
	"github.com/iagon/gridchat/chain/witness"
	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/keyregistry"
	"github.com/iagon/gridchat/node"
)

// waitWitnesses polls until nd knows at least k connected peers that run a witness.
func waitWitnesses(t *testing.T, nd *node.Node, k int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		n := 0
		h := nd.Host()
		for _, p := range h.Network().Peers() {
			if ps, err := h.Peerstore().SupportsProtocols(p, witness.ProtocolID); err == nil && len(ps) > 0 {
				n++
			}
		}
		if n >= k {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s knows %d witnesses, want %d", nd.ID(), n, k)
		}
		time.Sleep(20 * time.Millisecond) // polling identify, with a deadline
	}
}

// cosigners returns the witness peers whose cosignatures on the signed checkpoint verify.
func cosigners(t *testing.T, signed []byte) []string {
	t.Helper()
	var out []string
	_, sigs, _ := bytes.Cut(signed, []byte("\n\n"))
	for line := range strings.Lines(string(sigs)) {
		rest, ok := strings.CutPrefix(line, "— "+witness.WitnessNamePrefix)
		if !ok {
			continue
		}
		idText, _, _ := strings.Cut(rest, " ")
		id, err := peer.Decode(idText)
		if err != nil {
			t.Fatal(err)
		}
		v, err := witness.PeerWitnessVerifier(id)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := note.Open(signed, note.VerifierList(v)); err != nil {
			t.Fatalf("cosignature of %s: %v", id, err)
		}
		out = append(out, id.String())
	}
	return out
}

func TestRegistrationReceiptIsCosignedByOtherNodesAndVerifiedOnAnotherNode(t *testing.T) {
	nodes := gridtest.Swarm(t, 3, gridtest.Configure(func(i int, cfg *node.Config) {
		cfg.Directory.Validator.RequireReceipts = true
	}))
	waitWitnesses(t, nodes[0], 2)
	acct := registerAccount(t, nodes[0])
	id := acct.chain.AccountID()

	a, err := nodes[2].Directory().LookupAccount(deliveryCtx(t), id)
	if err != nil {
		t.Fatalf("lookup on node 3: %v", err)
	}
	rec, err := keyregistry.DecodeRecord(a.Record)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Receipts) != 1 || rec.Receipts[0].Seq != 0 {
		t.Fatalf("receipts %+v, want one for the genesis statement", rec.Receipts)
	}
	rc, err := chain.ParseReceipt(rec.Receipts[0].Body)
	if err != nil {
		t.Fatal(err)
	}
	if origin, _, _ := strings.Cut(string(rc.Checkpoint), "\n"); origin != witness.LogOrigin(nodes[0].ID()) {
		t.Fatalf("receipt from log %q, want node 1's", origin)
	}
	got := cosigners(t, rc.Checkpoint)
	want := map[string]bool{nodes[1].ID().String(): true, nodes[2].ID().String(): true}
	if len(got) != 2 || !want[got[0]] || !want[got[1]] || got[0] == got[1] {
		t.Fatalf("cosigned by %v, want nodes 2 and 3", got)
	}
	genesis := acct.chain.Statements()[0].Encode()
	r := chain.Record{Account: chain.DeriveAccountKey(genesis), Seq: 0, Body: genesis}
	if _, err := nodes[2].ReceiptPolicy().Verify(rc, r); err != nil {
		t.Fatalf("node 3's receipt policy: %v", err)
	}

	// A record whose receipt was tampered with, or that lacks it, is refused.
	key := keyregistry.AccountKey(id)
	stripped := *rc
	stripped.Checkpoint, _, _ = bytes.Cut(rc.Checkpoint, []byte("\n— "+witness.WitnessNamePrefix))
	stripped.Checkpoint = append(stripped.Checkpoint, '\n')
	badSig := *rc
	badSig.Checkpoint = bytes.Clone(rc.Checkpoint)
	i := bytes.LastIndex(badSig.Checkpoint, []byte(" ")) + 20
	badSig.Checkpoint[i] ^= 0x01 // a base64 letter of the last cosignature's signature (after its key hash)
	otherEntry := *rc
	otherEntry.Index = 1
	vals := keyregistry.Validators(keyregistry.ValidatorConfig{Receipts: nodes[2].ReceiptPolicy(), RequireReceipts: true})
	for name, bad := range map[string][]keyregistry.Receipt{
		"without cosignatures":     {{Seq: 0, Body: stripped.Marshal()}},
		"with a bad cosignature":   {{Seq: 0, Body: badSig.Marshal()}},
		"with another entry":       {{Seq: 0, Body: otherEntry.Marshal()}},
		"without a receipt at all": nil,
	} {
		raw, err := (&keyregistry.Record{Chain: rec.Chain, Receipts: bad}).Encode()
		if err != nil {
			t.Fatal(err)
		}
		if err := vals[keyregistry.NSAccount].Validate(key, raw); !errors.Is(err, keyregistry.ErrBadProof) {
			t.Errorf("record %s: validator says %v, want ErrBadProof", name, err)
		}
		if err := nodes[2].DHT().PutValue(deliveryCtx(t), key, raw); err == nil {
			t.Errorf("record %s: the grid stored it", name)
		}
	}

	// The node serves its checkpoint, cosigned, and its (empty) split-view evidence.
	body := httpGet(t, nodes[0].GatewayURL()+node.CheckpointPath)
	cp, err := nodes[2].ReceiptPolicy().Verify(&chain.Receipt{Index: 0, Checkpoint: body}, r)
	if err != nil || cp.Size < 1 {
		t.Fatalf("served checkpoint %q: %v", body, err)
	}
	var ev []witness.Evidence
	if err := json.Unmarshal(httpGet(t, nodes[1].GatewayURL()+node.SplitViewsPath), &ev); err != nil || len(ev) != 0 {
		t.Fatalf("split views: %v %v", ev, err)
	}
}

func TestLoneNodeAcceptsRegistrationAndAddsTheReceiptOnceWitnessesJoin(t *testing.T) {
	nodes := gridtest.Swarm(t, 1)
	lone := nodes[0]
	acct := registerAccount(t, lone)
	id := acct.chain.AccountID()
	a, err := lone.Directory().LookupAccount(deliveryCtx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	if rec, _ := keyregistry.DecodeRecord(a.Record); len(rec.Receipts) != 0 {
		t.Fatalf("a lone node's record carries %d receipts, want none (no witness)", len(rec.Receipts))
	}

	cfg := gridtest.NodeConfig(t, 1)
	for _, ad := range lone.P2PAddrs() {
		cfg.Bootstrap = append(cfg.Bootstrap, ad.String())
	}
	peerNode, err := node.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = peerNode.Close() })
	waitWitnesses(t, lone, 1)

	n, err := lone.Directory().UpgradeReceipts(deliveryCtx(t))
	if err != nil || n != 1 {
		t.Fatalf("upgrade receipts: %d, %v; want 1 record", n, err)
	}
	a, err = peerNode.Directory().LookupAccount(deliveryCtx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := keyregistry.DecodeRecord(a.Record)
	if len(rec.Receipts) != 1 {
		t.Fatalf("after upgrade the record carries %d receipts, want 1", len(rec.Receipts))
	}
	rc, err := chain.ParseReceipt(rec.Receipts[0].Body)
	if err != nil {
		t.Fatal(err)
	}
	if got := cosigners(t, rc.Checkpoint); len(got) != 1 || got[0] != peerNode.ID().String() {
		t.Fatalf("cosigned by %v, want the new peer", got)
	}
	if n, err := lone.Directory().UpgradeReceipts(deliveryCtx(t)); err != nil || n != 0 {
		t.Fatalf("second upgrade: %d, %v; want nothing left to do", n, err)
	}
}

func httpGet(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s %v", url, resp.StatusCode, b, err)
	}
	return b
}
