// Package dht runs the grid's own Kademlia DHT: a go-libp2p-kad-dht in server
// mode under the grid's protocol prefix, whose records are checked by a
// registry of namespaced validators that services plug into, plus the
// bootstrap and routing-table helpers a node and its tests need.
//
// The grid is private: it never speaks the IPFS (Amino) DHT protocol, never
// dials the public bootstrap peers, and accepts peers on private and loopback
// addresses into its routing table.
package dht

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"
	kaddht "github.com/libp2p/go-libp2p-kad-dht"
	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// DefaultProtocolPrefix is the protocol prefix of the grid's DHT; its
// protocol ID is DefaultProtocolPrefix + "/kad/1.0.0".
const DefaultProtocolPrefix protocol.ID = "/gridchat"

// DefaultMaxRecordAge is how long a node keeps a record it was given before
// dropping it; writers republish within this time.
const DefaultMaxRecordAge = 36 * time.Hour

// ErrNoBootstrapPeer is returned by Bootstrap when peers were configured but
// none of them could be reached.
var ErrNoBootstrapPeer = errors.New("no bootstrap peer reachable")

// Config configures the grid's DHT. The zero value of every field but
// Datastore means its default.
type Config struct {
	// ProtocolPrefix separates the grid's DHT from every other one.
	// Default DefaultProtocolPrefix.
	ProtocolPrefix protocol.ID
	// Datastore keeps the records this node holds for the grid, so that they
	// survive a restart. Required; give the DHT a namespace of its own.
	Datastore ds.Batching
	// Validators maps a namespace to the validator of its records.
	Validators map[string]record.Validator
	// MaxValueSize caps a record value in bytes. Default DefaultMaxValueSize.
	MaxValueSize int
	// MaxRecordAge is how long a stored record lives. Default DefaultMaxRecordAge.
	MaxRecordAge time.Duration
	// BootstrapPeers are dialled by Bootstrap, and again by the DHT whenever
	// its routing table runs empty.
	BootstrapPeers []peer.AddrInfo
	// Logger receives this package's logs. Default slog.Default().
	Logger *slog.Logger
}

// DHT is the grid's DHT: a kad-dht IpfsDHT (all its methods are promoted:
// PutValue, GetValue, RoutingTable, ...) with the grid's bootstrap helpers.
type DHT struct {
	*kaddht.IpfsDHT

	host      host.Host
	validator *Validator
	bootstrap []peer.AddrInfo
	log       *slog.Logger

	closeOnce sync.Once
	closeErr  error
}

// New starts the grid's DHT on h in server mode. It does not dial anyone;
// call Bootstrap for that. The caller must Close the DHT before closing h.
func New(h host.Host, cfg Config) (*DHT, error) {
	if cfg.Datastore == nil {
		return nil, errors.New("dht: new: no datastore")
	}
	if cfg.ProtocolPrefix == "" {
		cfg.ProtocolPrefix = DefaultProtocolPrefix
	}
	if cfg.ProtocolPrefix == kaddht.DefaultPrefix {
		return nil, fmt.Errorf("dht: new: protocol prefix %q is the public IPFS DHT's", cfg.ProtocolPrefix)
	}
	if cfg.MaxRecordAge == 0 {
		cfg.MaxRecordAge = DefaultMaxRecordAge
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	v, err := NewValidator(cfg.Validators, cfg.MaxValueSize)
	if err != nil {
		return nil, err
	}
	for _, ai := range cfg.BootstrapPeers {
		if ai.ID == "" || len(ai.Addrs) == 0 {
			return nil, fmt.Errorf("dht: new: bootstrap peer %v needs an ID and an address", ai)
		}
	}
	bootstrap := append([]peer.AddrInfo(nil), cfg.BootstrapPeers...)

	opts := []kaddht.Option{
		kaddht.Mode(kaddht.ModeServer),
		kaddht.ProtocolPrefix(cfg.ProtocolPrefix),
		kaddht.Datastore(cfg.Datastore),
		// Setting the validator replaces the IPFS defaults (/pk, /ipns):
		// the grid stores only its own namespaces.
		kaddht.Validator(v),
		kaddht.MaxRecordAge(cfg.MaxRecordAge),
		// A grid runs on private networks and, in tests and local swarms, on
		// loopback: take every peer that speaks our protocol into the routing
		// table and queries. (These are kad-dht v0.42's defaults too; they
		// are stated here because the public filters would empty a local grid.)
		kaddht.RoutingTableFilter(func(any, peer.ID) bool { return true }),
		kaddht.QueryFilter(func(any, peer.AddrInfo) bool { return true }),
	}
	if len(bootstrap) > 0 {
		opts = append(opts, kaddht.BootstrapPeers(bootstrap...))
	}
	kd, err := kaddht.New(h, opts...)
	if err != nil {
		return nil, fmt.Errorf("dht: new: %w", err)
	}
	return &DHT{
		IpfsDHT:   kd,
		host:      h,
		validator: v,
		bootstrap: bootstrap,
		log:       cfg.Logger,
	}, nil
}

// Validator returns the validator the DHT checks every record with.
func (d *DHT) Validator() *Validator { return d.validator }

// BootstrapPeers returns the configured bootstrap peers.
func (d *DHT) BootstrapPeers() []peer.AddrInfo {
	return append([]peer.AddrInfo(nil), d.bootstrap...)
}

// Bootstrap dials every configured bootstrap peer at once and then refreshes
// the routing table, waiting for the refresh. It fails with
// ErrNoBootstrapPeer when peers are configured and none answers, and with
// ctx's error when ctx ends first. With no bootstrap peers it only refreshes
// (a lone first node of a grid is not an error).
func (d *DHT) Bootstrap(ctx context.Context) error {
	if len(d.bootstrap) > 0 {
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			reached int
			errs    []error
		)
		for _, ai := range d.bootstrap {
			if ai.ID == d.host.ID() {
				continue
			}
			wg.Go(func() {
				err := d.host.Connect(ctx, ai)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", ai.ID, err))
					return
				}
				reached++
			})
		}
		wg.Wait()
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("dht: bootstrap: %w", err)
		}
		if reached == 0 && len(errs) > 0 {
			return fmt.Errorf("dht: bootstrap: %w: %w", ErrNoBootstrapPeer, errors.Join(errs...))
		}
		for _, err := range errs {
			d.log.Warn("bootstrap peer unreachable", "err", err)
		}
	}
	select {
	case err := <-d.RefreshRoutingTable():
		// A refresh that finds nobody is normal while a grid is forming; the
		// DHT keeps refreshing on its own.
		if err != nil {
			d.log.Debug("routing table refresh", "err", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("dht: bootstrap: %w", ctx.Err())
	}
}

// RoutingTableSize returns the number of peers in the routing table.
func (d *DHT) RoutingTableSize() int { return d.RoutingTable().Size() }

// WaitForPeers blocks until the routing table holds at least n peers, or ctx
// ends (then it returns ctx's error wrapped, with the size reached). While it
// waits it refreshes the table every waitRefresh: a node that met the others
// while they were busy may not have taken them into its table, and kad-dht's
// own periodic refresh would come only minutes later.
func (d *DHT) WaitForPeers(ctx context.Context, n int) error {
	// The routing table has no change notification we may use (kad-dht owns
	// its single PeerAdded hook), so poll it at a short, fixed interval.
	const every = 10 * time.Millisecond
	if d.RoutingTableSize() >= n {
		return nil
	}
	t := time.NewTicker(every)
	defer t.Stop()
	refresh := time.NewTicker(waitRefresh)
	defer refresh.Stop()
	for {
		select {
		case <-t.C:
			if d.RoutingTableSize() >= n {
				return nil
			}
		case <-refresh.C:
			d.ForceRefresh() // its answer is buffered and not needed: the table is polled
		case <-ctx.Done():
			return fmt.Errorf("dht: wait for %d peers (have %d): %w", n, d.RoutingTableSize(), ctx.Err())
		}
	}
}

// waitRefresh is how long WaitForPeers lets the table grow by itself before
// it refreshes it.
const waitRefresh = 5 * time.Second

// Close stops the DHT and waits for its goroutines. It does not close the
// host or the datastore. It is safe to call more than once.
func (d *DHT) Close() error {
	d.closeOnce.Do(func() {
		if err := d.IpfsDHT.Close(); err != nil {
			d.closeErr = fmt.Errorf("dht: close: %w", err)
		}
	})
	return d.closeErr
}
