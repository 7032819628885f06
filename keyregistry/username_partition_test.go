package keyregistry_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/gateway/gatewaytest"
	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/keyregistry"
	"github.com/iagon/gridchat/node"
	"github.com/iagon/gridchat/wire"
)

// partitionGater refuses connections to and from the peers it blocks, until
// healed.
type partitionGater struct {
	mu      sync.Mutex
	blocked map[peer.ID]bool
}

func (g *partitionGater) block(ps ...peer.ID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.blocked == nil {
		g.blocked = make(map[peer.ID]bool)
	}
	for _, p := range ps {
		g.blocked[p] = true
	}
}

func (g *partitionGater) heal() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.blocked = nil
}

func (g *partitionGater) allowed(p peer.ID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.blocked[p]
}

func (g *partitionGater) InterceptPeerDial(p peer.ID) bool { return g.allowed(p) }
func (g *partitionGater) InterceptAddrDial(p peer.ID, _ multiaddr.Multiaddr) bool {
	return g.allowed(p)
}
func (g *partitionGater) InterceptAccept(network.ConnMultiaddrs) bool { return true }
func (g *partitionGater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.allowed(p)
}
func (g *partitionGater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) {
	return true, 0
}

// TestPartitionedClaimsOfOneNameConvergeOnTheEarliestWitnessedClaim claims
// "alice" for account A through node 1 and for account B through node 5
// while the two halves of the grid cannot reach each other. Each claim is
// witnessed in its half (every on-disk node runs a log and a witness); A's
// is witnessed first, but B's statement is signed two minutes earlier and B
// has the smaller account ID, so only the witnessed time makes A the winner.
// After the partition heals, every node answers A within the cache lifetime,
// and still after republishing and a cold restart of node 5; B learns that
// its claim lost.
func TestPartitionedClaimsOfOneNameConvergeOnTheEarliestWitnessedClaim(t *testing.T) {
	const n = 5
	gaters := make([]*partitionGater, n)
	for i := range gaters {
		gaters[i] = &partitionGater{}
	}
	g := newGridOnDisk(t, n, gridtest.Configure(func(i int, cfg *node.Config) {
		cfg.ConnectionGater = gaters[i]
	}))
	u, _ := g.register(0, "conn-u")
	v, _ := g.register(4, "conn-v")
	a, b := u, v // a: larger account ID, claims first; b: smaller ID, signs earlier
	if bytes.Compare(a.id[:], b.id[:]) < 0 {
		a, b = b, a
	}
	g.waitAnnouncements(2)
	g.clock.Advance(3 * time.Minute) // room to sign b's claim before a's, after its genesis

	// Partition: nodes 0-1 | nodes 2-4.
	halves := [][]int{{0, 1}, {2, 3, 4}}
	for h, half := range halves {
		for _, i := range half {
			for _, j := range halves[1-h] {
				gaters[i].block(g.nodes[j].ID())
			}
		}
	}
	for _, i := range halves[0] {
		for _, j := range halves[1] {
			_ = g.nodes[i].Host().Network().ClosePeer(g.nodes[j].ID())
			_ = g.nodes[j].Host().Network().ClosePeer(g.nodes[i].ID())
		}
	}

	g.appendStmt(a, a.devs[0], &e2ee.SetUsername{Username: "alice"})
	g.mustSubmit(0, a)
	aDone := time.Now()
	// Cosignature times have whole seconds: b's must fall in a later one.
	for time.Now().Unix() <= aDone.Unix() {
		time.Sleep(10 * time.Millisecond) // waiting for the wall clock's next second
	}
	if _, err := b.chain.Append(b.devs[0], &e2ee.SetUsername{Username: "alice"}, g.clock.Now().Add(-2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	g.mustSubmit(4, b)

	// Both claims are witnessed, each in its half: the split view the
	// order must resolve.
	for i, want := range map[int]*user{0: a, 4: b} {
		got, err := g.dir(i).LookupAccount(ctxT(t), want.id)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := keyregistry.DecodeRecord(got.Record)
		if err != nil {
			t.Fatal(err)
		}
		if last := rec.Receipts[len(rec.Receipts)-1]; last.Seq != got.Length-1 {
			t.Fatalf("node %d: the claim of %s has no receipt", i, want.id)
		}
	}
	for h, want := range []*user{a, b} {
		for _, i := range halves[h] {
			got, err := g.dir(i).LookupUsername(ctxT(t), "alice")
			if err != nil || got.ID != want.id {
				t.Fatalf("partitioned node %d: alice is %s, %v; want %s", i, idOf(got), err, want.id)
			}
		}
	}

	for _, gt := range gaters {
		gt.heal()
	}
	g.waitTopicMesh() // connects every pair again
	// A node answers from its cache for at most CacheTTL; then it asks the
	// grid, whose Select gives every asker the same winner.
	g.clock.Advance(keyregistry.DefaultLimits().CacheTTL + time.Second)
	converged := func(what string) {
		t.Helper()
		start := time.Now()
		deadline := start.Add(30 * time.Second)
		for i := range g.nodes {
			for {
				got, err := g.dir(i).LookupUsername(ctxT(t), "alice")
				if err == nil && got.ID == a.id {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: node %d: alice is %s, %v; want %s", what, i, idOf(got), err, a.id)
				}
				time.Sleep(50 * time.Millisecond) // polling the grid with a deadline
			}
		}
		t.Logf("%s: every node answers the winner after %v", what, time.Since(start).Round(time.Millisecond))
		// Asked straight from the DHT too.
		g.forgetAll()
		for i := range g.nodes {
			got, err := g.dir(i).LookupUsername(ctxT(t), "alice")
			if err != nil || got.ID != a.id {
				t.Fatalf("%s, cache-cold: node %d: alice is %s, %v; want %s", what, i, idOf(got), err, a.id)
			}
		}
	}
	converged("after healing")

	// The loser learns it lost: asking whether it holds the name, and
	// renewing the claim, both say so.
	for i := range g.nodes {
		if _, err := g.dir(i).UsernameOf(ctxT(t), "alice", b.id); !errors.Is(err, keyregistry.ErrUsernameLost) {
			t.Fatalf("node %d: the loser asking for its name: %v, want ErrUsernameLost", i, err)
		}
		if got, err := g.dir(i).UsernameOf(ctxT(t), "alice", a.id); err != nil || got.ID != a.id {
			t.Fatalf("node %d: the winner asking for its name: %s, %v", i, idOf(got), err)
		}
	}
	// The same over the WebSocket API and HTTP, on a node that never saw
	// b's claim before the healing.
	ws, err := gatewaytest.Dial(ctxT(t), gatewaytest.WSURL(g.nodes[1].GatewayURL()), gatewaytest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_, err = ws.Call(ctxT(t), keyregistry.OpUsername, keyregistry.UsernameQuery{Username: "alice", Account: b.id.String()})
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.Code(keyregistry.CodeUsernameLost) || we.Reason != "directory_username_lost" {
		t.Fatalf("directory.username for the loser: %v", err)
	}
	for acct, want := range map[e2ee.AccountID]int{a.id: http.StatusOK, b.id: http.StatusConflict} {
		resp, err := http.Get(g.nodes[1].GatewayURL() + "/v1/usernames/alice?account=" + acct.String())
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("GET /v1/usernames/alice?account=%s: %d %v, want %d", acct, resp.StatusCode, body, want)
		}
	}

	// An update of the loser that leaves its name alone is accepted and
	// gossiped; no node's cache gives it the name back.
	g.appendStmt(b, b.devs[0], &e2ee.SetProfile{Profile: e2ee.Profile{Name: "B"}})
	g.mustSubmit(2, b)
	deadline := time.Now().Add(20 * time.Second)
	for i := range g.nodes {
		for {
			got, err := g.dir(i).LookupAccount(ctxT(t), b.id)
			if err == nil && got.Length == uint64(b.chain.Len()) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d did not see the loser's update: %v; %s", i, err, g.announcements())
			}
			time.Sleep(20 * time.Millisecond) // polling for gossip with a deadline
		}
		if got, err := g.dir(i).LookupUsername(ctxT(t), "alice"); err != nil || got.ID != a.id {
			t.Fatalf("node %d, after the loser's update: alice is %s, %v; want %s", i, idOf(got), err, a.id)
		}
	}

	renewal, _ := e2ee.DecodeChain(b.chain.Encode())
	if _, err := renewal.Append(b.devs[0], &e2ee.SetUsername{Username: "alice"}, g.clock.Now()); err != nil {
		t.Fatal(err)
	}
	_, err = g.submit(2, renewal.Encode())
	mustRefuse(t, "renewal of the lost claim", err, keyregistry.ErrUsernameLost)
	// Republishing (node 4 holds b's record) does not bring b's claim back.
	for i := range g.nodes {
		if _, err := g.dir(i).Republish(ctxT(t)); err != nil {
			t.Fatalf("node %d: republish: %v", i, err)
		}
	}
	if lost := counter(g.nodes[4], "gridchat_directory_username_lost_total"); lost < 1 {
		t.Fatalf("node 4 republished the lost claim under the name (lost counter %v)", lost)
	}
	converged("after republishing")

	// Nor does a cold restart of the node that accepted b's claim (its DHT
	// store and held records are on disk).
	g.restart(4)
	g.waitTopicMesh()
	if _, err := g.dir(4).Republish(ctxT(t)); err != nil {
		t.Fatalf("restarted node: republish: %v", err)
	}
	converged("after a cold restart")

	// The winner renews as usual.
	g.appendStmt(a, a.devs[0], &e2ee.SetUsername{Username: "alice"})
	g.mustSubmit(3, a)
}

// idOf names an account in a failure message.
func idOf(a *keyregistry.Account) string {
	if a == nil {
		return "none"
	}
	return a.ID.String()
}
