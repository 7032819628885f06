package keyregistry_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/iagon/gridchat/chain"
	"github.com/iagon/gridchat/chain/tlog"
	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/keyregistry"
	"github.com/iagon/gridchat/node"
)

func TestEveryStatementIsPublishedAndItsReceiptKeptBesideTheRecord(t *testing.T) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	log, err := tlog.Open(context.Background(), tlog.Config{Dir: t.TempDir(), Origin: "gridchat.test/log/0", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = log.Close() }) // after the swarm's cleanup: nodes stop publishing first
	g := newGrid(t, 3, gridtest.Configure(func(i int, cfg *node.Config) {
		cfg.Directory.Publisher = log
	}))
	u, _ := g.register(0, "conn-1")
	g.link(u)
	g.appendStmt(u, u.devs[1], &e2ee.SetUsername{Username: "dormouse"})
	g.mustSubmit(1, u)

	g.forgetAll()
	a, err := g.dir(2).LookupAccount(ctxT(t), u.id)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := keyregistry.DecodeRecord(a.Record)
	if err != nil {
		t.Fatal(err)
	}
	stmts := u.chain.Statements()
	if len(rec.Receipts) != len(stmts) {
		t.Fatalf("%d receipts for %d statements", len(rec.Receipts), len(stmts))
	}
	acct := chain.DeriveAccountKey(stmts[0].Encode())
	for i, r := range rec.Receipts {
		if r.Seq != uint64(i) {
			t.Fatalf("receipt %d is for seq %d", i, r.Seq)
		}
		rc, err := chain.ParseReceipt(r.Body)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := log.Verify(rc, chain.Record{Account: acct, Seq: r.Seq, Body: stmts[i].Encode()}); err != nil {
			t.Fatalf("receipt of statement %d: %v", i, err)
		}
	}
}

func TestValidatorsWithReceiptsRefuseUnpublishedAndForgedReceipts(t *testing.T) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	log, err := tlog.Open(context.Background(), tlog.Config{Dir: t.TempDir(), Origin: "gridchat.test/log/v", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = log.Close() })
	g := newGrid(t, 2, gridtest.Configure(func(i int, cfg *node.Config) {
		cfg.Directory.Publisher = log
		cfg.Directory.Validator.Receipts = log
		cfg.Directory.Validator.RequireReceipts = true
	}))
	u, _ := g.register(0, "conn-1")
	g.link(u)
	g.mustSubmit(0, u)
	a, err := g.dir(1).LookupAccount(ctxT(t), u.id)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := keyregistry.DecodeRecord(a.Record)
	if err != nil {
		t.Fatal(err)
	}
	vals := keyregistry.Validators(keyregistry.ValidatorConfig{Now: g.clock.Now, Receipts: log, RequireReceipts: true})
	v, k := vals[keyregistry.NSAccount], keyregistry.AccountKey(u.id)
	if err := v.Validate(k, a.Record); err != nil {
		t.Fatalf("published record: %v", err)
	}
	unpublished, _ := (&keyregistry.Record{Chain: rec.Chain, Receipts: rec.Receipts[:1]}).Encode()
	if err := v.Validate(k, unpublished); !errors.Is(err, keyregistry.ErrBadProof) {
		t.Fatalf("record whose add-device was never published: %v", err)
	}
	swapped, _ := (&keyregistry.Record{Chain: rec.Chain, Receipts: []keyregistry.Receipt{
		{Seq: 0, Body: rec.Receipts[1].Body}, {Seq: 1, Body: rec.Receipts[0].Body},
	}}).Encode()
	if err := v.Validate(k, swapped); !errors.Is(err, keyregistry.ErrBadProof) {
		t.Fatalf("receipts of other statements: %v", err)
	}
	// The grid refuses the unpublished record too.
	if err := g.nodes[1].DHT().PutValue(ctxT(t), k, unpublished); err == nil {
		t.Fatal("DHT accepted a record with an unpublished device key")
	}
}
