package keyregistry_test

import (
	"errors"
	"testing"
	"time"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/keyregistry"
	"github.com/iagon/gridchat/node"
)

func TestUsernameClaimIsRenewedAndLapsesWithoutRenewal(t *testing.T) {
	const lifetime = time.Hour
	g := newGrid(t, 3, gridtest.Configure(func(_ int, cfg *node.Config) {
		cfg.Directory.Validator.UsernameLifetime = lifetime
	}))
	u, _ := g.register(0, "conn-u")
	v, _ := g.register(1, "conn-v")
	claim := func(x *user, through int) error {
		g.appendStmt(x, x.devs[0], &e2ee.SetUsername{Username: "mad.hatter"})
		_, err := g.submit(through, x.chain.Encode())
		return err
	}
	owner := func() (e2ee.AccountID, error) {
		g.forgetAll()
		a, err := g.dir(2).LookupUsername(ctxT(t), "mad.hatter")
		if err != nil {
			return e2ee.AccountID{}, err
		}
		return a.ID, nil
	}
	if err := claim(u, 0); err != nil {
		t.Fatal(err)
	}
	vBase, _ := e2ee.DecodeChain(v.chain.Encode())

	g.clock.Advance(lifetime / 2)
	if err := claim(u, 1); err != nil { // renewal
		t.Fatalf("renewal: %v", err)
	}
	g.clock.Advance(lifetime * 3 / 4) // past the first claim's lifetime, inside the renewal's
	v.chain, _ = e2ee.DecodeChain(vBase.Encode())
	mustRefuse(t, "claim of a renewed name", claim(v, 2), keyregistry.ErrUsernameTaken)
	if id, err := owner(); err != nil || id != u.id {
		t.Fatalf("owner after renewal: %v, %v", id, err)
	}

	g.clock.Advance(lifetime / 2) // the renewal has lapsed too
	if _, err := owner(); !errors.Is(err, keyregistry.ErrNotFound) {
		t.Fatalf("lapsed claim still resolves: %v", err)
	}
	v.chain, _ = e2ee.DecodeChain(vBase.Encode())
	if err := claim(v, 2); err != nil {
		t.Fatalf("claim of a lapsed name: %v", err)
	}
	if id, err := owner(); err != nil || id != v.id {
		t.Fatalf("owner after lapse: %v, %v", id, err)
	}
}

func TestRenamedAccountNoLongerHoldsItsOldName(t *testing.T) {
	g := newGrid(t, 3)
	u, _ := g.register(0, "conn-u")
	g.appendStmt(u, u.devs[0], &e2ee.SetUsername{Username: "march.hare"})
	g.mustSubmit(0, u)
	g.appendStmt(u, u.devs[0], &e2ee.SetUsername{Username: "march.hare.two"})
	g.mustSubmit(1, u)
	for i := range g.nodes {
		g.forgetAll()
		if _, err := g.dir(i).LookupUsername(ctxT(t), "march.hare"); !errors.Is(err, keyregistry.ErrNotFound) {
			t.Fatalf("node %d: old name still resolves: %v", i, err)
		}
		a, err := g.dir(i).LookupUsername(ctxT(t), "march.hare.two")
		if err != nil || a.ID != u.id {
			t.Fatalf("node %d: new name: %v, %v", i, a, err)
		}
	}
}
