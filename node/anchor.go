package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/Salvionied/apollo/v2/backend"
	"github.com/Salvionied/apollo/v2/backend/blockfrost"

	"github.com/iagon/gridchat/chain/cardano"
	"github.com/iagon/gridchat/chain/tlog"
)

// Anchor endpoint kinds (AnchorSettings.Kind).
const (
	AnchorNone       = "none"
	AnchorSocket     = "socket"
	AnchorBlockfrost = "blockfrost"
)

// AnchorSettings configure anchoring the node's log checkpoints on Cardano
// (docs/PROTOCOL.md §6.6). Anchoring is off unless Kind is "socket" or
// "blockfrost". Every Interval the node anchors its latest witnessed
// checkpoint, if it grew, and records the transaction beside the log, so
// receipts can name it (tlog.Log.AnchoredReceipt).
type AnchorSettings struct {
	// Kind is the submission endpoint: "none" (default), "socket" (a
	// Cardano node's local socket, node-to-client local-tx-submission) or
	// "blockfrost" (a Blockfrost-compatible HTTP API).
	Kind string
	// Address is the node's unix socket path (socket) or the API's base URL
	// (blockfrost).
	Address string
	// IndexURL is the Blockfrost-compatible API that gives protocol
	// parameters, the tip and the wallet's UTxOs. Default: Address with
	// blockfrost; required with socket unless ChainContext is set.
	IndexURL string
	// ProjectID is the Blockfrost project ID sent with API requests.
	ProjectID string
	// KeyFile holds the paying wallet's Ed25519 seed (32 bytes, mode 0600).
	// Required when anchoring is on. It is not the node's identity key:
	// it holds funds.
	KeyFile string
	// Network is "mainnet", "preprod" (default) or "preview".
	Network string
	// Interval is the time between two anchors. Default 1 hour.
	Interval time.Duration

	// ChainContext, if set, replaces the IndexURL backend (tests, other
	// indexers). Not in configuration files.
	ChainContext backend.ChainContext
	// NetworkMagic, if set, overrides the network's magic number for the
	// socket handshake (a private test network).
	NetworkMagic uint32
	// Ticks, if set, replaces the Interval timer (tests). Not in
	// configuration files.
	Ticks <-chan time.Time
}

func (a AnchorSettings) withDefaults() AnchorSettings {
	if a.Kind == "" {
		a.Kind = AnchorNone
	}
	if a.Network == "" {
		a.Network = "preprod"
	}
	if a.Interval == 0 {
		a.Interval = time.Hour
	}
	if a.IndexURL == "" && a.Kind == AnchorBlockfrost {
		a.IndexURL = a.Address
	}
	return a
}

// cardanoNetwork returns a network's address network ID and magic number.
func cardanoNetwork(name string) (id uint8, magic uint32, ok bool) {
	switch name {
	case "mainnet":
		return 1, 764824073, true
	case "preprod":
		return 0, 1, true
	case "preview":
		return 0, 2, true
	}
	return 0, 0, false
}

func (a AnchorSettings) validate() error {
	switch a.Kind {
	case AnchorNone:
		return nil
	case AnchorSocket, AnchorBlockfrost:
	default:
		return fmt.Errorf("anchor.kind %q: want none, socket or blockfrost", a.Kind)
	}
	if a.Address == "" {
		return fmt.Errorf("anchor.address: required with kind %s", a.Kind)
	}
	if a.KeyFile == "" {
		return errors.New("anchor.key_file: required when anchoring is on")
	}
	if _, _, ok := cardanoNetwork(a.Network); !ok {
		return fmt.Errorf("anchor.network %q: want mainnet, preprod or preview", a.Network)
	}
	if a.Interval < 0 {
		return errors.New("anchor.interval: must not be negative")
	}
	if a.ChainContext == nil && a.IndexURL == "" {
		return errors.New("anchor.index_url: required with kind socket (UTxOs and protocol parameters)")
	}
	return nil
}

// anchorRunner owns the goroutine that anchors the log's checkpoints.
type anchorRunner struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// close stops the runner and waits for it (an anchor in flight is cancelled).
func (r *anchorRunner) close() {
	r.once.Do(func() {
		r.cancel()
		r.wg.Wait()
	})
}

// startAnchor starts anchoring l's checkpoints if the configuration asks.
func (n *Node) startAnchor(l *tlog.Log) (*anchorRunner, error) {
	s := n.cfg.Chain.Anchor
	if s.Kind == AnchorNone {
		return nil, nil
	}
	key, err := loadWalletKey(s.KeyFile)
	if err != nil {
		return nil, err
	}
	netID, magic, _ := cardanoNetwork(s.Network)
	if s.NetworkMagic != 0 {
		magic = s.NetworkMagic
	}
	cc := s.ChainContext
	if cc == nil {
		cc = blockfrost.NewBlockFrostChainContext(s.IndexURL, netID, s.ProjectID)
	}
	var sub cardano.Submitter
	switch s.Kind {
	case AnchorSocket:
		sub = &cardano.SocketSubmitter{Path: s.Address, NetworkMagic: magic}
	case AnchorBlockfrost:
		sub = &cardano.HTTPSubmitter{BaseURL: strings.TrimRight(s.Address, "/"), ProjectID: s.ProjectID}
	}
	a, err := cardano.New(cardano.Config{
		ChainContext: cc, Submitter: sub, Key: key, Network: netID,
		Chain: "cardano:" + s.Network, Logger: n.log.With("part", "anchor"),
	})
	if err != nil {
		return nil, fmt.Errorf("node: anchor: %w", err)
	}
	ctx, cancel := context.WithCancel(n.ctx)
	r := &anchorRunner{cancel: cancel}
	ticks := s.Ticks
	var t *time.Ticker
	if ticks == nil {
		t = time.NewTicker(s.Interval)
		ticks = t.C
	}
	r.wg.Go(func() {
		if t != nil {
			defer t.Stop()
		}
		a.Run(ctx, l, ticks, l.RecordAnchor)
	})
	n.log.Info("anchoring checkpoints on Cardano", "kind", s.Kind, "network", s.Network,
		"interval", s.Interval, "wallet", a.Address().String())
	return r, nil
}

// loadWalletKey reads the anchoring wallet's Ed25519 seed. Like the identity
// key, a seed readable by group or others, or of the wrong size, is refused.
func loadWalletKey(path string) (ed25519.PrivateKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("node: anchor wallet key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: anchor wallet key %s is readable by group or others (want mode 0600)", ErrConfig, path)
	}
	seed, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("node: anchor wallet key: %w", err)
	}
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%w: anchor wallet key %s: %d bytes, want a %d-byte Ed25519 seed", ErrConfig, path, len(seed), ed25519.SeedSize)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}
