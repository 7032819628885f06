package dht

import (
	"context"
	"errors"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p"
	kaddht "github.com/libp2p/go-libp2p-kad-dht"
	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newHost(t *testing.T) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func newDHT(t *testing.T, h host.Host, bootstrap ...peer.AddrInfo) *DHT {
	t.Helper()
	d, err := New(h, Config{
		Datastore:      dssync.MutexWrap(ds.NewMapDatastore()),
		Validators:     map[string]record.Validator{"acct": goodValidator{}},
		BootstrapPeers: bootstrap,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func info(h host.Host) peer.AddrInfo { return peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()} }

func TestBootstrapJoinsLoopbackPeersIntoRoutingTables(t *testing.T) {
	h1, h2, h3 := newHost(t), newHost(t), newHost(t)
	d1 := newDHT(t, h1)
	d2 := newDHT(t, h2, info(h1))
	d3 := newDHT(t, h3, info(h1))
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for _, d := range []*DHT{d2, d3} {
		if err := d.Bootstrap(ctx); err != nil {
			t.Fatalf("bootstrap: %v", err)
		}
	}
	for i, d := range []*DHT{d1, d2, d3} {
		if err := d.WaitForPeers(ctx, 2); err != nil {
			t.Fatalf("dht %d: %v", i+1, err)
		}
	}
	// The grid speaks its own protocol, never the public IPFS one.
	protos := h1.Mux().Protocols()
	var ours, ipfs bool
	for _, p := range protos {
		ours = ours || p == DefaultProtocolPrefix+"/kad/1.0.0"
		ipfs = ipfs || p == kaddht.DefaultPrefix+"/kad/1.0.0"
	}
	if !ours || ipfs {
		t.Errorf("protocols %v: want %s/kad/1.0.0 and not the IPFS DHT", protos, DefaultProtocolPrefix)
	}
}

func TestBootstrapFailsWhenNoPeerAnswers(t *testing.T) {
	gone := newHost(t)
	addr := info(gone)
	gone.Close()
	d := newDHT(t, newHost(t), addr)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := d.Bootstrap(ctx); !errors.Is(err, ErrNoBootstrapPeer) {
		t.Fatalf("Bootstrap = %v, want ErrNoBootstrapPeer", err)
	}
}

func TestWaitForPeersEndsWithContext(t *testing.T) {
	d := newDHT(t, newHost(t))
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := d.WaitForPeers(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitForPeers = %v", err)
	}
}

func TestNewRefusesIPFSPrefixAndMissingDatastore(t *testing.T) {
	h := newHost(t)
	if _, err := New(h, Config{Datastore: dssync.MutexWrap(ds.NewMapDatastore()), ProtocolPrefix: kaddht.DefaultPrefix}); err == nil {
		t.Error("the IPFS DHT prefix was accepted")
	}
	if _, err := New(h, Config{}); err == nil {
		t.Error("a DHT without datastore was accepted")
	}
	if _, err := New(h, Config{Datastore: dssync.MutexWrap(ds.NewMapDatastore()), BootstrapPeers: []peer.AddrInfo{{ID: h.ID()}}}); err == nil {
		t.Error("a bootstrap peer without address was accepted")
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	d := newDHT(t, newHost(t))
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}
