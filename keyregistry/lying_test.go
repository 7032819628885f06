package keyregistry_test

import (
	"context"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	recpb "github.com/libp2p/go-libp2p-record/pb"
	"github.com/multiformats/go-base32"
	"google.golang.org/protobuf/proto"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/keyregistry"
	"github.com/iagon/gridchat/node"
)

// dhtKey is where kad-dht files a value record in a node's datastore (the
// node keeps the DHT under /dht; kad-dht files "/ns/rest" under
// "/ns/" + base32(key)).
func dhtKey(key string) ds.Key {
	ns := key[1:]
	for i := range ns {
		if ns[i] == '/' {
			ns = ns[:i]
			break
		}
	}
	return ds.NewKey("/dht/" + ns + "/" + base32.RawStdEncoding.EncodeToString([]byte(key)))
}

// lie makes nd serve value for key, bypassing every check: the record is
// written straight into its datastore, as a malicious node would.
func lie(t testing.TB, nd *node.Node, key string, value []byte) {
	t.Helper()
	rec := &recpb.Record{Key: []byte(key), Value: value, TimeReceived: time.Now().UTC().Format(time.RFC3339Nano)}
	b, err := proto.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := nd.Datastore().Put(context.Background(), dhtKey(key), b); err != nil {
		t.Fatal(err)
	}
}

// forgetLocal removes nd's own copy of key, so its lookups must ask peers.
func forgetLocal(t testing.TB, nd *node.Node, key string) {
	t.Helper()
	if err := nd.Datastore().Delete(context.Background(), dhtKey(key)); err != nil {
		t.Fatal(err)
	}
}

// localValue returns the value nd's DHT store holds for key.
func localValue(t testing.TB, nd *node.Node, key string) []byte {
	t.Helper()
	b, err := nd.Datastore().Get(context.Background(), dhtKey(key))
	if err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	var rec recpb.Record
	if err := proto.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	return rec.GetValue()
}

// counter sums the counters called name whose label values, in label-name
// order, start with labels.
func counter(nd *node.Node, name string, labels ...string) float64 {
	mfs, _ := nd.Metrics().Gather()
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i, l := range m.GetLabel() {
				if i < len(labels) && l.GetValue() != labels[i] {
					continue next
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

func TestLyingNodesServingStaleOrAlteredChainsAreCaught(t *testing.T) {
	g := newGrid(t, 5)
	u, _ := g.register(0, "conn-1")
	staleRec := recordOf(t, g, u.id) // the grid's genesis-only record
	g.link(u)
	g.mustSubmit(0, u)
	key := keyregistry.AccountKey(u.id)
	requester := g.nodes[4]

	t.Run("stale chain from most peers", func(t *testing.T) {
		// Nodes 1-3 serve the old chain; only node 0 is honest; the
		// requester has no copy of its own and a cold cache.
		for _, i := range []int{1, 2, 3} {
			lie(t, g.nodes[i], key, staleRec)
		}
		forgetLocal(t, requester, key)
		g.forgetAll()
		a, err := requester.Directory().LookupAccount(ctxT(t), u.id)
		if err != nil {
			t.Fatal(err)
		}
		if a.Length != 2 {
			t.Fatalf("lookup returned the stale chain of %d statements", a.Length)
		}
		sameDevices(t, a, u.chain)
	})

	t.Run("altered chain", func(t *testing.T) {
		altered := append([]byte(nil), recordOf(t, g, u.id)...)
		altered[len(altered)-10] ^= 0x40 // inside the last statement's signature
		for _, i := range []int{1, 2, 3} {
			lie(t, g.nodes[i], key, altered)
		}
		forgetLocal(t, requester, key)
		g.forgetAll()
		a, err := requester.Directory().LookupAccount(ctxT(t), u.id)
		if err != nil {
			t.Fatal(err)
		}
		if a.Length != 2 {
			t.Fatalf("lookup returned %d statements", a.Length)
		}
		sameDevices(t, a, u.chain)

		// With the honest node lying too, the altered record is still never
		// served: the lookup finds nothing, or a copy that a lookup above
		// pushed back to a corrected peer.
		for i := range 4 {
			lie(t, g.nodes[i], key, altered)
		}
		forgetLocal(t, requester, key)
		g.forgetAll()
		a, err = requester.Directory().LookupAccount(ctxT(t), u.id)
		if err == nil {
			if string(a.Record) == string(altered) {
				t.Fatal("lookup served the altered record")
			}
			sameDevices(t, a, u.chain)
		}
	})

	t.Run("stale device index hides no revocation", func(t *testing.T) {
		// Every node serves the device index record from before the
		// revocation; the account record is current.
		devKey := keyregistry.DeviceKey(u.devs[1].ID())
		preRevocation := recordOf(t, g, u.id)
		g.appendStmt(u, u.devs[0], &e2ee.RevokeDevice{Device: u.devs[1].ID()})
		g.mustSubmit(0, u)
		for i := range g.nodes {
			lie(t, g.nodes[i], devKey, preRevocation)
		}
		g.forgetAll()
		auth, err := requester.Directory().AuthDevice(ctxT(t), u.devs[1].ID())
		if err != nil {
			t.Fatal(err)
		}
		if !auth.Revoked {
			t.Fatal("a stale device index record hid the revocation")
		}
	})

	t.Run("every peer serves the old chain", func(t *testing.T) {
		// A fresh account, so no earlier lookup's repair of lying peers is
		// still in flight. The requester saw its new chain; its cache entry
		// expires; then every peer, the requester's own store included,
		// serves the genesis-only chain. The directory refuses the rollback
		// and keeps what it verified.
		seen := accepted(requester)
		w, _ := g.register(1, "conn-w")
		wStale := w.chain.Encode()
		wStaleRec := recordOf(t, g, w.id)
		g.link(w)
		g.mustSubmit(1, w)
		if a, err := requester.Directory().LookupAccount(ctxT(t), w.id); err != nil || a.Length != 2 {
			t.Fatalf("first lookup: %v, %v", a, err)
		}
		// Let both announcements arrive first, so none refreshes the cache
		// entry after the clock moves.
		for deadline := time.Now().Add(10 * time.Second); accepted(requester) < seen+2; {
			if time.Now().After(deadline) {
				t.Fatalf("announcements not received: %s", g.announcements())
			}
			time.Sleep(10 * time.Millisecond) // polling for gossip with a deadline
		}
		for i := range g.nodes {
			lie(t, g.nodes[i], keyregistry.AccountKey(w.id), wStaleRec)
		}
		g.clock.Advance(keyregistry.DefaultLimits().CacheTTL + time.Minute)
		before := counter(requester, "gridchat_directory_stale_refused_total", "rollback", "dht")
		a, err := requester.Directory().LookupAccount(ctxT(t), w.id)
		if err != nil {
			t.Fatal(err)
		}
		if a.Length != 2 {
			t.Fatalf("directory rolled back to %d statements", a.Length)
		}
		sameDevices(t, a, w.chain)
		if after := counter(requester, "gridchat_directory_stale_refused_total", "rollback", "dht"); after <= before {
			t.Fatalf("rollback not counted (%v -> %v)", before, after)
		}
		// Submitting the stale chain is refused as a rollback of what this
		// node has verified.
		_, err = requester.Directory().Append(ctxT(t), wStale)
		mustRefuse(t, "append of the stale chain", err, keyregistry.ErrRollback)
	})
}

// recordOf returns the record the grid holds for id, as node 0 verifies it.
func recordOf(t testing.TB, g *grid, id e2ee.AccountID) []byte {
	t.Helper()
	a, err := g.dir(0).LookupAccount(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	return a.Record
}
