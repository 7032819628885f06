// Package node assembles one gridchat node from its configuration: a libp2p
// host with a persistent identity, the grid's DHT, gossipsub, a datastore on
// disk, the HTTP gateway, and the services built on them; and it owns their
// lifecycle, so that Close stops everything in order.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/namespace"
	dssync "github.com/ipfs/go-datastore/sync"
	pebbleds "github.com/ipfs/go-ds-pebble"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/libp2p/go-libp2p/p2p/transport/websocket"
	"github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/iagon/gridchat/dht"
	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/gateway"
	"github.com/iagon/gridchat/keyregistry"
	"github.com/iagon/gridchat/linkrelay"
	"github.com/iagon/gridchat/relay/mailbox"
)

// DatastoreDir is the Pebble datastore's directory inside the data directory.
const DatastoreDir = "datastore"

// LockFile is the file in the data directory that a running node holds an
// exclusive lock on.
const LockFile = "LOCK"

// ErrDataDirInUse is returned by New when another node holds the data
// directory.
var ErrDataDirInUse = errors.New("data directory is in use by another node")

// dhtNamespace is the datastore namespace of the DHT's records. Services
// take namespaces of their own (/keyregistry, /relay, ...).
const dhtNamespace = "/dht"

// Node is one running gridchat node. Its accessors return the parts that
// services build on; none of them may be closed by the caller.
type Node struct {
	cfg     Config
	log     *slog.Logger
	reg     *prometheus.Registry
	dirLock *os.File // held while the node runs; nil without a data directory
	started bool     // New succeeded

	store  ds.Batching
	host   host.Host
	dht    *dht.DHT
	pubsub *pubsub.PubSub
	gw     *gateway.Server
	dir    *keyregistry.Service
	deliv  *delivery
	mbox   *mailbox.Service
	links  *linkrelay.Service
	chain  *chainParts // nil without a log of the node's own
	// receipts verifies directory receipts; nil when the configuration
	// brings its own publisher or verifier.
	receipts *GridReceipts
	// revocations carries the devices the directory learnt were revoked
	// to revocationLoop.
	revocations chan e2ee.DeviceID

	// ctx lives until Close; the node's goroutines and pubsub run under it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// loopCtx and loops are revocationLoop's: it uses the mailbox and the
	// hub, so Close stops it before them.
	loopCtx    context.Context
	loopCancel context.CancelFunc
	loops      sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// New starts a node: it opens the datastore and the identity key in
// cfg.DataDir, starts the libp2p host on cfg.ListenAddrs, the DHT, gossipsub
// and the gateway, and begins joining the grid through cfg.Bootstrap in the
// background (use DHT().WaitForPeers to wait for it). ctx bounds only the
// start; the node runs until Close. Configuration errors match ErrConfig.
func New(ctx context.Context, cfg Config) (_ *Node, err error) {
	cfg = cfg.withDefaults()
	p, err := cfg.validate()
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("node: start: %w", err)
	}
	n := &Node{cfg: cfg, log: cfg.Logger, reg: prometheus.NewRegistry(),
		revocations: make(chan e2ee.DeviceID, revocationQueue)}
	if cfg.Directory.Publisher == nil && cfg.Directory.Validator.Receipts == nil {
		n.receipts = newGridReceipts(cfg.Chain.WitnessQuorum, p.witnesses)
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.loopCtx, n.loopCancel = context.WithCancel(n.ctx)
	// On any failure below, close what was opened, in reverse order.
	defer func() {
		if err != nil {
			err = errors.Join(err, n.Close())
		}
	}()
	n.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)

	if cfg.DataDir != "" {
		if n.dirLock, err = lockDataDir(cfg.DataDir); err != nil {
			return nil, err
		}
	}
	key, err := n.openIdentity()
	if err != nil {
		return nil, err
	}
	if n.store, err = n.openDatastore(); err != nil {
		return nil, err
	}
	if n.host, err = n.newHost(key, p); err != nil {
		return nil, err
	}
	n.dht, err = dht.New(n.host, dht.Config{
		ProtocolPrefix: n.protocolPrefix(),
		Datastore:      namespace.Wrap(n.store, ds.NewKey(dhtNamespace)),
		Validators:     withPresenceValidator(withDirectoryValidators(cfg.Validators, n.directoryValidator()), cfg.Delivery),
		MaxValueSize:   cfg.MaxRecordSize,
		BootstrapPeers: p.bootstrap,
		Logger:         n.log.With("part", "dht"),
	})
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	n.pubsub, err = pubsub.NewGossipSub(n.ctx, n.host,
		pubsub.WithMessageSignaturePolicy(pubsub.StrictSign),
		pubsub.WithPeerExchange(false),
		// The grid's topics carry few, important messages (directory
		// updates, revocations, checkpoints): a node sends what it publishes
		// to every subscribed peer it is connected to, not only to its mesh,
		// so a message is not lost while a topic's mesh is still forming.
		pubsub.WithFloodPublish(true),
	)
	if err != nil {
		return nil, fmt.Errorf("node: gossipsub: %w", err)
	}
	n.gw, err = gateway.New(gateway.Config{
		Addr:     cfg.GatewayAddr,
		Version:  Version(),
		Registry: n.reg,
		Logger:   n.log.With("part", "gateway"),
	}, n)
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}

	// Services (key directory, relay, chain, WebSocket API) are created here,
	// after the grid's parts they use and before the gateway starts, so that
	// they can add their routes to it with n.gw.Handle; Close stops them
	// after the gateway (no new requests) and before the grid.
	if cfg.Directory.Publisher == nil && cfg.DataDir != "" {
		if err := n.startChain(); err != nil {
			return nil, err
		}
	}
	if err := n.startDirectory(); err != nil {
		return nil, err
	}
	if err := n.startMailbox(); err != nil {
		return nil, err
	}
	if err := n.startDelivery(); err != nil {
		return nil, err
	}
	if err := n.registerMailboxOps(); err != nil {
		return nil, err
	}
	if err := n.startLinkRelay(); err != nil {
		return nil, err
	}
	if err := n.registerDirectoryOps(); err != nil {
		return nil, err
	}
	n.loops.Go(n.revocationLoop)
	if err := n.startGossipRepair(); err != nil {
		return nil, err
	}

	if err := n.gw.Start(); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	if len(p.bootstrap) > 0 {
		n.wg.Go(func() {
			if err := n.dht.Bootstrap(n.ctx); err != nil && n.ctx.Err() == nil {
				// Not fatal: the DHT retries its bootstrap peers while its
				// routing table is empty.
				n.log.Warn("bootstrap", "err", err)
			}
		})
	}
	n.started = true
	n.log.Info("node started", "peer_id", n.host.ID().String(), "gateway", n.gw.URL(),
		"addrs", fmt.Sprint(n.host.Addrs()))
	return n, nil
}

// protocolPrefix is the grid's protocol prefix, which every stream protocol
// and pubsub topic of the node's services starts with (docs/PROTOCOL.md §0).
func (n *Node) protocolPrefix() protocol.ID { return protocol.ID(n.cfg.ProtocolPrefix) }

func (n *Node) openIdentity() (crypto.PrivKey, error) {
	if n.cfg.DataDir == "" {
		// Only reachable with InMemory (validate checks): a throwaway identity.
		key, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			return nil, fmt.Errorf("node: identity: %w", err)
		}
		return key, nil
	}
	return LoadOrCreateIdentity(n.cfg.DataDir)
}

func (n *Node) openDatastore() (ds.Batching, error) {
	if n.cfg.InMemory {
		return dssync.MutexWrap(ds.NewMapDatastore()), nil
	}
	path := filepath.Join(n.cfg.DataDir, DatastoreDir)
	store, err := pebbleds.NewDatastore(path)
	if err != nil {
		return nil, fmt.Errorf("node: open datastore %s: %w", path, err)
	}
	guarded, err := newClosingStore(store, n.log.With("part", "datastore"), n.reg)
	if err != nil {
		return nil, errors.Join(err, store.Close())
	}
	return guarded, nil
}

func (n *Node) newHost(key crypto.PrivKey, p parsed) (host.Host, error) {
	cm, err := connmgr.NewConnManager(n.cfg.ConnManager.LowWater, n.cfg.ConnManager.HighWater,
		connmgr.WithGracePeriod(n.cfg.ConnManager.GracePeriod))
	if err != nil {
		return nil, fmt.Errorf("node: connection manager: %w", err)
	}
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(resourceLimits(n.cfg.Resources)))
	if err != nil {
		cm.Close()
		return nil, fmt.Errorf("node: resource manager: %w", err)
	}
	opts := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.ListenAddrs(p.listen...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.Transport(websocket.New),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ConnectionManager(cm),
		libp2p.ResourceManager(rm),
		libp2p.PrometheusRegisterer(n.reg),
		// The grid is its own network: no circuit relays, no NAT port
		// mapping, no user agent beyond ours.
		libp2p.DisableRelay(),
		libp2p.UserAgent("gridnode/" + Version()),
	}
	if n.cfg.ConnectionGater != nil {
		opts = append(opts, libp2p.ConnectionGater(n.cfg.ConnectionGater))
	}
	// libp2p.New closes cm and rm itself when it fails.
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("node: libp2p host: %w", err)
	}
	// libp2p starts when at least one address listens; a node must listen
	// on every address it was given (a port in use is an error).
	if got := h.Network().ListenAddresses(); len(got) < len(p.listen) {
		h.Close()
		return nil, fmt.Errorf("node: libp2p host: listening on %d of the %d listen addresses %v (address in use?)",
			len(got), len(p.listen), p.listen)
	}
	return h, nil
}

// resourceLimits turns our limits into the resource manager's: libp2p's
// defaults scaled to our memory and descriptors, with our totals on top.
func resourceLimits(r ResourceLimits) rcmgr.ConcreteLimitConfig {
	scaling := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&scaling)
	base := scaling.Scale(r.MaxMemory, r.MaxFileDescriptors)
	return rcmgr.PartialLimitConfig{
		System: rcmgr.ResourceLimits{
			Conns:   rcmgr.LimitVal(r.MaxConns),
			Streams: rcmgr.LimitVal(r.MaxStreams),
		},
		PeerDefault: rcmgr.ResourceLimits{
			Conns:   rcmgr.LimitVal(r.MaxConnsPerPeer),
			Streams: rcmgr.LimitVal(r.MaxStreamsPerPeer),
		},
	}.Build(base)
}

// Close stops the node: the WebSocket API and the gateway first (no new
// requests; those in flight are cancelled), then every service, each
// waiting for its own goroutines, then the node's goroutines and gossipsub,
// the DHT (which flushes its records), the libp2p host, and last the
// datastore, once nothing is left that writes to it. It waits for every goroutine it
// started and is safe to call more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		n.loopCancel()
		n.loops.Wait()
		if n.deliv != nil && n.deliv.hub != nil {
			// WebSockets first: the HTTP server does not track hijacked
			// connections, so the hub closes them (1001) and waits for their
			// operations before the gateway stops taking requests.
			errs = append(errs, n.deliv.hub.Close())
		}
		if n.gw != nil {
			ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ShutdownTimeout)
			errs = append(errs, n.gw.Close(ctx))
			cancel()
		}
		if n.deliv != nil {
			errs = append(errs, n.deliv.close())
		}
		if n.mbox != nil {
			errs = append(errs, n.mbox.Close())
		}
		if n.links != nil {
			errs = append(errs, n.links.Close())
		}
		if n.dir != nil {
			errs = append(errs, n.dir.Close())
		}
		if n.chain != nil {
			errs = append(errs, n.chain.close())
		}
		// Cancelling ctx stops gossipsub and the bootstrap goroutine.
		n.cancel()
		n.wg.Wait()
		if n.dht != nil {
			errs = append(errs, n.dht.Close())
		}
		if n.host != nil {
			if err := n.host.Close(); err != nil {
				errs = append(errs, fmt.Errorf("node: close host: %w", err))
			}
		}
		if n.store != nil {
			if err := n.store.Close(); err != nil {
				errs = append(errs, fmt.Errorf("node: close datastore: %w", err))
			}
		}
		if n.dirLock != nil {
			// Closing the file releases the lock.
			if err := n.dirLock.Close(); err != nil {
				errs = append(errs, fmt.Errorf("node: unlock data directory: %w", err))
			}
		}
		n.closeErr = errors.Join(errs...)
		if n.started {
			n.log.Info("node stopped", "peer_id", n.host.ID().String())
		}
	})
	return n.closeErr
}

// ID returns the node's peer ID.
func (n *Node) ID() peer.ID { return n.host.ID() }

// Host returns the node's libp2p host.
func (n *Node) Host() host.Host { return n.host }

// DHT returns the grid's DHT as this node runs it.
func (n *Node) DHT() *dht.DHT { return n.dht }

// PubSub returns the node's gossipsub router.
func (n *Node) PubSub() *pubsub.PubSub { return n.pubsub }

// Datastore returns the node's root datastore. A service wraps it in a
// namespace of its own (namespace.Wrap(d, ds.NewKey("/relay"))); /dht is the
// DHT's. Writes are not synced one by one: call Sync where durability before
// an answer matters.
func (n *Node) Datastore() ds.Batching { return n.store }

// Metrics returns the node's Prometheus registry, served on /metrics.
// Services register their collectors here, never on the global registry.
func (n *Node) Metrics() *prometheus.Registry { return n.reg }

// Logger returns the node's logger.
func (n *Node) Logger() *slog.Logger { return n.log }

// DataDir returns the node's data directory ("" for an in-memory node
// without one).
func (n *Node) DataDir() string { return n.cfg.DataDir }

// Directory returns the node's key directory service.
func (n *Node) Directory() *keyregistry.Service { return n.dir }

// Gateway returns the node's HTTP server.
func (n *Node) Gateway() *gateway.Server { return n.gw }

// GatewayURL returns the gateway's base URL, e.g. http://127.0.0.1:8080.
func (n *Node) GatewayURL() string { return n.gw.URL() }

// Addrs returns the node's libp2p listen addresses.
func (n *Node) Addrs() []multiaddr.Multiaddr { return n.host.Addrs() }

// P2PAddrs returns the node's listen addresses with /p2p/<peer ID>
// appended, as another node's Bootstrap wants them.
func (n *Node) P2PAddrs() []multiaddr.Multiaddr {
	addrs, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: n.host.ID(), Addrs: n.host.Addrs()})
	if err != nil {
		// Only fails for an empty peer ID, which a running host never has.
		return nil
	}
	return addrs
}

// AddrInfo returns the node's peer ID and listen addresses.
func (n *Node) AddrInfo() peer.AddrInfo {
	return peer.AddrInfo{ID: n.host.ID(), Addrs: n.host.Addrs()}
}

// RoutingTableSize returns the number of peers in the DHT routing table.
func (n *Node) RoutingTableSize() int { return n.dht.RoutingTableSize() }

// ConnectedPeers returns the number of peers the host is connected to.
func (n *Node) ConnectedPeers() int {
	count := 0
	for _, p := range n.host.Network().Peers() {
		if n.host.Network().Connectedness(p) == network.Connected {
			count++
		}
	}
	return count
}

// Version returns the version of the running gridnode build: the main
// module's version, or "devel" with the VCS revision when built from a
// working tree.
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	if v == "" || v == "(devel)" {
		v = "devel"
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += "+" + s.Value[:12]
			}
		}
	}
	return v
}
