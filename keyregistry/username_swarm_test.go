package keyregistry_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"

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

// TestLeftUsernameIsFreeAtOnceGridWide has account A claim "old.name"
// through node 0 and rename to "new.name" through node 1; account B then
// claims "old.name" through node 3 and gets it at once, and every node
// answers B for it (and A for "new.name"), with warm caches, after they
// expire and after every node republishes. A peer replaying A's stale claim
// record to the name's key does not bring A back: the peers that saw A's
// release refuse it, and where it was taken (by nodes that did not see the
// release) lookups store A's release over it and B's gateway republishes
// B's claim.
func TestLeftUsernameIsFreeAtOnceGridWide(t *testing.T) {
	g := newGridOnDisk(t, 5)
	a, _ := g.register(0, "conn-a")
	b, _ := g.register(3, "conn-b")
	g.waitAnnouncements(2)
	g.appendStmt(a, a.devs[0], &e2ee.SetUsername{Username: "old.name"})
	g.mustSubmit(0, a)
	aDone := time.Now()
	staleA, err := g.dir(0).LookupAccount(ctxT(t), a.id)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := g.dir(3).LookupUsername(ctxT(t), "old.name"); err != nil || got.ID != a.id {
		t.Fatalf("node 3 before the rename: old.name is %s, %v", idOf(got), err) // and caches it
	}
	g.appendStmt(a, a.devs[0], &e2ee.SetUsername{Username: "new.name"})
	g.mustSubmit(1, a)
	// The gateway that accepted the rename stored A's release under the
	// old name, over A's claim, on every node, before anyone looked.
	for i, nd := range g.nodes {
		rec, err := keyregistry.DecodeRecord(localValue(t, nd, keyregistry.UsernameKey("old.name")))
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		if c, err := e2ee.DecodeChain(rec.Chain); err != nil || c.Head() != a.chain.Head() {
			t.Fatalf("node %d does not hold A's release under old.name (%v)", i, err)
		}
	}

	// B's claim is witnessed in a later second than A's, so A's stale
	// claim comes first in the order of competing claims (the replay below
	// then beats B's claim where B's is all a peer holds).
	for time.Now().Unix() <= aDone.Unix() {
		time.Sleep(10 * time.Millisecond) // waiting for the wall clock's next second
	}
	g.appendStmt(b, b.devs[0], &e2ee.SetUsername{Username: "old.name"})
	if _, err := g.submit(3, b.chain.Encode()); err != nil {
		t.Fatalf("claim of a name its holder left, through another node: %v", err)
	}

	answers := func(what string, wantOld e2ee.AccountID) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for i := range g.nodes {
			for {
				o, oerr := g.dir(i).LookupUsername(ctxT(t), "old.name")
				n, nerr := g.dir(i).LookupUsername(ctxT(t), "new.name")
				if oerr == nil && o.ID == wantOld && nerr == nil && n.ID == a.id {
					break
				}
				if oerr == nil && o.ID == a.id {
					t.Fatalf("%s: node %d answers the account that left old.name", what, i)
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: node %d: old.name is %s, %v (want %s); new.name is %s, %v", what, i, idOf(o), oerr, wantOld, idOf(n), nerr)
				}
				time.Sleep(50 * time.Millisecond) // polling for gossip with a deadline
			}
		}
	}
	answers("warm caches", b.id)
	g.clock.Advance(keyregistry.DefaultLimits().CacheTTL + time.Second)
	answers("caches expired", b.id)
	g.forgetAll()
	answers("cache-cold", b.id)
	// Node 0, which accepted A's claim, holds A's record; make it one that
	// missed the rename, as a node that was down would.
	heldA := ds.NewKey("/keyregistry/held/" + a.id.String())
	if err := g.nodes[0].Datastore().Put(ctxT(t), heldA, staleA.Record); err != nil {
		t.Fatal(err)
	}
	for i := range g.nodes {
		if _, err := g.dir(i).Republish(ctxT(t)); err != nil {
			t.Fatalf("node %d: republish: %v", i, err)
		}
	}
	g.forgetAll()
	answers("after republishing", b.id)
	if raw, err := g.nodes[0].Datastore().Get(ctxT(t), heldA); err != nil || bytes.Equal(raw, staleA.Record) {
		t.Fatalf("node 0 still holds A's stale claim after republishing (%v)", err)
	}
	for i := range g.nodes {
		if _, err := g.dir(i).UsernameOf(ctxT(t), "old.name", a.id); !errors.Is(err, keyregistry.ErrNotFound) {
			t.Fatalf("node %d: A asking for the name it left: %v", i, err)
		}
		if got, err := g.dir(i).UsernameOf(ctxT(t), "old.name", b.id); err != nil || got.ID != b.id {
			t.Fatalf("node %d: B asking for its name: %s, %v", i, idOf(got), err)
		}
	}

	// A peer replays A's stale claim (kept before the rename) to the
	// name's key. Every node saw A's release when the rename was stored,
	// so it holds nothing against B's claim there: the peers refuse it and
	// every node still answers B.
	forgetLocal(t, g.nodes[4], keyregistry.UsernameKey("old.name"))
	if err := g.nodes[4].DHT().PutValue(ctxT(t), keyregistry.UsernameKey("old.name"), staleA.Record); err != nil {
		t.Fatalf("replay: %v", err)
	}
	for i, nd := range g.nodes[:4] {
		rec, err := keyregistry.DecodeRecord(localValue(t, nd, keyregistry.UsernameKey("old.name")))
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		if c, err := e2ee.DecodeChain(rec.Chain); err != nil || c.AccountID() != b.id {
			t.Fatalf("node %d took the replayed stale claim over B's (%v)", i, err)
		}
	}
	g.forgetAll()
	answers("after a replay", b.id)

	// Peers that never saw the release (restarted since, say) would take
	// the stale claim over B's: make every node hold it. No node answers A:
	// the first lookup to meet it stores A's release over it.
	for _, nd := range g.nodes {
		lie(t, nd, keyregistry.UsernameKey("old.name"), staleA.Record)
	}
	g.forgetAll()
	for i := range g.nodes {
		if got, err := g.dir(i).LookupUsername(ctxT(t), "old.name"); err == nil && got.ID == a.id {
			t.Fatalf("node %d: the stale claim brought A back", i)
		} else if err != nil && !errors.Is(err, keyregistry.ErrNotFound) {
			t.Fatalf("node %d after the stale claim spread: %v", i, err)
		}
	}
	released := 0.0
	for _, nd := range g.nodes {
		released += counter(nd, "gridchat_directory_bad_answers_total", "released")
	}
	if released < 1 {
		t.Fatal("no lookup met the stale claim")
	}
	// B's gateway republishes B's claim, which beats A's release.
	if _, err := g.dir(3).Republish(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	g.forgetAll()
	answers("after the stale claim spread and B's republication", b.id)
}
