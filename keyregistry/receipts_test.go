package keyregistry_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
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
