package node_test

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/iagon/gridchat/chain"
	"github.com/iagon/gridchat/chain/cardano"
	"github.com/iagon/gridchat/chain/cardano/cardanotest"
	"github.com/iagon/gridchat/chain/tlog"
	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/node"
)

func TestNodeAnchorsItsWitnessedCheckpointOnCardanoAndReceiptsNameTheAnchor(t *testing.T) {
	cn := cardanotest.New(t)
	view := cardanotest.NewWallet(cn)
	seed := bytes.Repeat([]byte{9}, ed25519.SeedSize)
	keyFile := filepath.Join(t.TempDir(), "wallet.key")
	if err := os.WriteFile(keyFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	probe, err := cardano.New(cardano.Config{ChainContext: view, Submitter: &cardano.SocketSubmitter{}, Key: ed25519.NewKeyFromSeed(seed)})
	if err != nil {
		t.Fatal(err)
	}
	cn.Fund(probe.Address(), 30_000_000, 1)

	ticks := make(chan time.Time)
	nodes := gridtest.Swarm(t, 2, gridtest.Configure(func(i int, cfg *node.Config) {
		if i == 0 {
			cfg.Chain.Anchor = node.AnchorSettings{
				Kind: node.AnchorSocket, Address: cn.Socket(), KeyFile: keyFile, Network: "preprod",
				NetworkMagic: cardanotest.Magic, ChainContext: view, Ticks: ticks,
			}
		}
	}))
	waitWitnesses(t, nodes[0], 1)
	acct := registerAccount(t, nodes[0])
	log := nodes[0].Log()
	if _, err := log.AnchoredReceipt(deliveryCtx(t), 0); !errors.Is(err, tlog.ErrNotAnchored) {
		t.Fatalf("receipt before any anchor: %v, want not anchored", err)
	}

	ticks <- time.Now()
	deadline := time.Now().Add(20 * time.Second)
	var rc *chain.Receipt
	for {
		rc, err = log.AnchoredReceipt(deliveryCtx(t), 0)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no anchored receipt after 20 s: %v (node rejections: %v)", err, cn.Rejected())
		}
		time.Sleep(20 * time.Millisecond) // polling the runner, with a deadline
	}
	an, err := chain.ParseAnchor(rc.Extra)
	if err != nil || an.Chain != "cardano:preprod" {
		t.Fatalf("receipt extra %q: %+v %v", rc.Extra, an, err)
	}
	tx, ok := cn.Accepted(an.TxID)
	if !ok {
		t.Fatalf("the Cardano node did not apply anchor tx %s", an.TxID)
	}
	got, err := cardano.ParseMetadata(tx.Metadata())
	if err != nil {
		t.Fatal(err)
	}
	genesis := acct.chain.Statements()[0].Encode()
	r := chain.Record{Account: chain.DeriveAccountKey(genesis), Seq: 0, Body: genesis}
	cp, err := nodes[1].ReceiptPolicy().Verify(rc, r)
	if err != nil {
		t.Fatalf("anchored receipt on node 2: %v", err)
	}
	if got.Root != cp.Root || got.Size != cp.Size || got.Origin != cp.Origin {
		t.Fatalf("anchored %+v, receipt checkpoint %+v", got, cp)
	}
}

func TestAnchorConfigurationIsChecked(t *testing.T) {
	for name, a := range map[string]node.AnchorSettings{
		"unknown kind":      {Kind: "ftp", Address: "x", KeyFile: "k"},
		"no address":        {Kind: node.AnchorBlockfrost, KeyFile: "k"},
		"no key file":       {Kind: node.AnchorBlockfrost, Address: "http://127.0.0.1:1"},
		"unknown network":   {Kind: node.AnchorBlockfrost, Address: "http://127.0.0.1:1", KeyFile: "k", Network: "moon"},
		"socket no indexer": {Kind: node.AnchorSocket, Address: "/tmp/node.sock", KeyFile: "k"},
		"missing key file":  {Kind: node.AnchorBlockfrost, Address: "http://127.0.0.1:1", KeyFile: filepath.Join(t.TempDir(), "none")},
	} {
		cfg := gridtest.NodeConfig(t, 0)
		cfg.Chain.Anchor = a
		nd, err := node.New(deliveryCtx(t), cfg)
		if err == nil {
			nd.Close()
			t.Errorf("%s: node started", name)
		}
	}
}
