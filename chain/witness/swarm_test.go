package witness

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/iagon/gridchat/chain"
	"github.com/iagon/gridchat/chain/tlog"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/note"
)

// node is one grid node of a test swarm: a libp2p host with pubsub, a
// witness, and (when started) its own log witnessed by the other nodes.
type node struct {
	host    host.Host
	key     ed25519.PrivateKey
	ps      *pubsub.PubSub
	store   ds.Batching
	reg     *prometheus.Registry
	witness *Witness
	log     *tlog.Log
}

func newHost(t testing.TB) (host.Host, ed25519.PrivateKey) {
	t.Helper()
	priv, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := libp2p.New(libp2p.Identity(priv), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	raw, err := priv.Raw()
	if err != nil {
		t.Fatal(err)
	}
	return h, ed25519.PrivateKey(raw)
}

func startWitness(t testing.TB, n *node) {
	t.Helper()
	w, err := New(context.Background(), Config{
		Host: n.host, PubSub: n.ps, Datastore: n.store, Key: n.key,
		Registerer: n.reg, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	n.witness = w
}

// newSwarm starts n connected nodes, each running a witness.
func newSwarm(t testing.TB, count int) []*node {
	t.Helper()
	nodes := make([]*node, count)
	for i := range nodes {
		h, key := newHost(t)
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		// Flood publishing, as the node should configure: checkpoint gossip is
		// low volume, and without it a message published before the first
		// heartbeat builds the mesh reaches no one.
		ps, err := pubsub.NewGossipSub(ctx, h, pubsub.WithFloodPublish(true))
		if err != nil {
			t.Fatal(err)
		}
		n := &node{host: h, key: key, ps: ps, store: dssync.MutexWrap(ds.NewMapDatastore()), reg: prometheus.NewRegistry()}
		startWitness(t, n)
		nodes[i] = n
	}
	for i, a := range nodes {
		for _, b := range nodes[i+1:] {
			if err := a.host.Connect(context.Background(), peer.AddrInfo{ID: b.host.ID(), Addrs: b.host.Addrs()}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Wait until every node knows every other follows the topic.
	waitFor(t, 20*time.Second, "topic peers", func() bool {
		for _, n := range nodes {
			if len(n.witness.TopicPeers()) < count-1 {
				return false
			}
		}
		return true
	})
	return nodes
}

// startLog runs n's log, witnessed by the given nodes with the given quorum.
func startLog(t testing.TB, n *node, witnesses []*node, quorum int) {
	t.Helper()
	var peers []Peer
	for _, w := range witnesses {
		v, err := PeerWitnessVerifier(w.host.ID())
		if err != nil {
			t.Fatal(err)
		}
		peers = append(peers, Peer{ID: w.host.ID(), Verifier: v})
	}
	l, err := tlog.Open(context.Background(), tlog.Config{
		Dir: t.TempDir(), Origin: LogOrigin(n.host.ID()), Key: n.key,
		Cosigner: n.witness.NewCosigner(peers, quorum),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	n.log = l
}

// policy returns the receipt policy of a client that trusts the witnesses.
func policy(t testing.TB, quorum int, witnesses ...*node) chain.Policy {
	t.Helper()
	p := chain.Policy{LogKey: PeerLogKey, Quorum: quorum}
	for _, w := range witnesses {
		v, err := PeerWitnessVerifier(w.host.ID())
		if err != nil {
			t.Fatal(err)
		}
		p.Witnesses = append(p.Witnesses, v)
	}
	return p
}

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func record(i int) chain.Record {
	var k chain.AccountKey
	k[0], k[1] = byte(i>>8), byte(i)
	return chain.Record{Account: k, Seq: uint64(i % 4), Body: fmt.Appendf(nil, "statement %d", i)}
}

func signNote(t testing.TB, s note.Signer, text string) []byte {
	t.Helper()
	b, err := note.Sign(&note.Note{Text: text}, s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
