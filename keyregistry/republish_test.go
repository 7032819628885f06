package keyregistry_test

import (
	"errors"
	"testing"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/keyregistry"
)

func TestRepublishRestoresHeldRecordsTheGridLost(t *testing.T) {
	g := newGrid(t, 4)
	u, _ := g.register(0, "conn-1")
	g.appendStmt(u, u.devs[0], &e2ee.SetUsername{Username: "tweedledum"})
	g.mustSubmit(0, u)
	keys := []string{keyregistry.AccountKey(u.id), keyregistry.DeviceKey(u.devs[0].ID()), keyregistry.UsernameKey("tweedledum")}
	for _, nd := range g.nodes {
		for _, k := range keys {
			forgetLocal(t, nd, k)
		}
	}
	g.forgetAll()
	if _, err := g.dir(2).LookupAccount(ctxT(t), u.id); !errors.Is(err, keyregistry.ErrNotFound) {
		t.Fatalf("records still in the grid: %v", err)
	}

	n, err := g.dir(0).Republish(ctxT(t))
	if err != nil || n != 1 {
		t.Fatalf("republish: %d, %v", n, err)
	}
	g.forgetAll()
	a, err := g.dir(2).LookupAccount(ctxT(t), u.id)
	if err != nil {
		t.Fatal(err)
	}
	sameDevices(t, a, u.chain)
	if b, err := g.dir(3).LookupUsername(ctxT(t), "tweedledum"); err != nil || b.ID != u.id {
		t.Fatalf("username after republish: %v, %v", b, err)
	}
	if _, _, err := g.dir(1).LookupDevice(ctxT(t), u.devs[0].ID()); err != nil {
		t.Fatalf("device after republish: %v", err)
	}
}
