package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/namespace"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/iagon/gridchat/chain"
	"github.com/iagon/gridchat/chain/tlog"
	"github.com/iagon/gridchat/chain/witness"
)

// witnessNamespace is the datastore namespace of the node's witness (the
// checkpoints it cosigned, split-view evidence).
const witnessNamespace = "/witness"

// HTTP routes of the key publication log.
const (
	// CheckpointPath serves the node's latest checkpoint as a signed note
	// (text/plain), with the witnesses' cosignatures.
	CheckpointPath = "/v1/log/checkpoint"
	// SplitViewsPath serves the split-view evidence the node's witness
	// holds, as a JSON array (witness.Evidence).
	SplitViewsPath = "/v1/log/splitviews"
)

// ChainSettings configure the node's key publication log, the witness it runs
// for the other nodes' logs, the receipts its directory accepts, and the
// anchoring of its checkpoints.
//
// Quorum policy: a receipt counts when its checkpoint is signed by the log's
// node (the Ed25519 key of the peer ID in its origin) and cosigned by at
// least WitnessQuorum witnesses other than that node. The node's log asks up
// to MaxWitnesses witnesses for every checkpoint and needs WitnessQuorum of
// them. A node alone (no witness reachable, e.g. `gridnode run` without
// peers) still accepts registrations: the directory stores the record
// without the statement's receipt and publishes the statement again every
// keyregistry.Limits.ReceiptRetryInterval until witnesses cosign it, then
// stores the record with its receipt (keyregistry.Service.UpgradeReceipts).
// With Directory.Validator.RequireReceipts set, such a record is refused
// instead, and so registration fails until witnesses are reachable.
type ChainSettings struct {
	// WitnessQuorum is how many witness cosignatures a receipt needs.
	// Default 1.
	WitnessQuorum int
	// Witnesses, if set, are the peer IDs of the only witnesses the log asks
	// and whose cosignatures count. Empty means every node of the grid that
	// runs a witness: in an open grid anyone can make peer IDs, so an
	// operator who wants a quorum to mean independent parties lists them.
	Witnesses []string
	// MaxWitnesses bounds the witnesses asked per checkpoint. Default 8.
	MaxWitnesses int
	// WitnessTimeout bounds one witness request. Default 5 s.
	WitnessTimeout time.Duration
	// Anchor configures anchoring of checkpoints on Cardano; disabled by
	// default.
	Anchor AnchorSettings
}

func (c ChainSettings) withDefaults() ChainSettings {
	if c.WitnessQuorum == 0 {
		c.WitnessQuorum = 1
	}
	if c.MaxWitnesses == 0 {
		c.MaxWitnesses = 8
	}
	if c.WitnessTimeout == 0 {
		c.WitnessTimeout = 5 * time.Second
	}
	c.Anchor = c.Anchor.withDefaults()
	return c
}

// validate checks defaulted settings and returns the listed witnesses.
func (c ChainSettings) validate() ([]peer.ID, error) {
	if c.WitnessQuorum < 0 || c.MaxWitnesses < 0 || c.WitnessTimeout < 0 {
		return nil, errors.New("witness_quorum, max_witnesses and witness_timeout must not be negative")
	}
	var ids []peer.ID
	for _, s := range c.Witnesses {
		id, err := peer.Decode(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("witnesses: %q: %v", s, err)
		}
		ids = append(ids, id)
	}
	if len(ids) > 0 && len(ids) < c.WitnessQuorum {
		return nil, fmt.Errorf("witnesses: %d listed, fewer than the quorum %d", len(ids), c.WitnessQuorum)
	}
	return ids, c.Anchor.validate()
}

// chainParts are the node's log, witness and anchor runner.
type chainParts struct {
	log     *tlog.Log
	witness *witness.Witness
	anchor  *anchorRunner // nil unless anchoring is on
}

// close stops the anchor runner, the log (which waits for queued entries)
// and the witness.
func (c *chainParts) close() error {
	var errs []error
	if c.anchor != nil {
		c.anchor.close()
	}
	if c.log != nil {
		errs = append(errs, c.log.Close())
	}
	if c.witness != nil {
		errs = append(errs, c.witness.Close())
	}
	return errors.Join(errs...)
}

// identityEd25519 returns the node's libp2p identity key as an Ed25519 key.
//
// One key per node: the node's log signs its checkpoints, and its witness
// cosigns other logs' checkpoints, with the libp2p identity key itself, so
// that any node verifies both from the peer ID alone (witness.PeerLogKey,
// witness.PeerWitnessVerifier) without a key directory of nodes. Reusing the
// key is safe because every use signs a different, unambiguous message:
// checkpoint notes begin with the "gridchat.grid/log/" origin line,
// cosignatures sign the "cosignature/v1\ntime ..." header of
// c2sp.org/tlog-cosignature, and libp2p signs only messages with its own
// prefixes ("noise-libp2p-static-key:", "libp2p-pubsub:", signed envelopes'
// domain strings), none of which can be read as another. A separate log key
// would need its own distribution and rotation story, and witnesses could not
// check it.
func identityEd25519(h host.Host) (ed25519.PrivateKey, error) {
	k := h.Peerstore().PrivKey(h.ID())
	if k == nil || k.Type() != crypto.Ed25519 {
		return nil, errors.New("node: identity key is not Ed25519")
	}
	raw, err := k.Raw()
	if err != nil || len(raw) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("node: identity key: %v", err)
	}
	return ed25519.PrivateKey(raw), nil
}

// startChain starts the node's witness and opens its key publication log in
// the data directory, with a cosigner over the grid's witnesses, and mounts
// the log's HTTP routes. It runs before the directory, which publishes to the
// log.
func (n *Node) startChain() error {
	cs := n.cfg.Chain
	listed, _ := cs.validate() // validated in New
	key, err := identityEd25519(n.host)
	if err != nil {
		return err
	}
	c := &chainParts{}
	n.chain = c
	c.witness, err = witness.New(n.ctx, witness.Config{
		Host:           n.host,
		PubSub:         n.pubsub,
		ProtocolPrefix: n.protocolPrefix(),
		Datastore:      namespace.Wrap(n.store, ds.NewKey(witnessNamespace)),
		Key:            key,
		// Cosign only grid logs (origin gridchat.grid/log/<peerID>, key
		// from the peer ID); MaxLogs bounds the state kept.
		AcceptLog:  func(origin string) bool { return strings.HasPrefix(origin, witness.LogOriginPrefix) },
		Logger:     n.log.With("part", "witness"),
		Registerer: n.reg,
		Limits:     witness.Limits{StreamTimeout: cs.WitnessTimeout},
	})
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if n.receipts != nil {
		n.receipts.witness.Store(c.witness)
	}
	cos := &gridCosigner{w: c.witness, h: n.host, listed: listed, quorum: cs.WitnessQuorum, max: cs.MaxWitnesses}
	c.log, err = tlog.Open(n.ctx, tlog.Config{
		Dir:      filepath.Join(n.cfg.DataDir, LogDir),
		Origin:   witness.LogOrigin(n.host.ID()),
		Key:      key,
		Cosigner: cos,
		Policy:   chain.Policy{LogKey: witness.PeerLogKey, Quorum: cs.WitnessQuorum, Distrusted: c.witness.Distrusted},
		Logger:   n.log.With("part", "log"),
	})
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if err := n.gw.Handle("GET "+SplitViewsPath, c.witness.EvidenceHandler()); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if err := n.gw.Handle("GET "+CheckpointPath, checkpointHandler(c.log)); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if c.anchor, err = n.startAnchor(c.log); err != nil {
		return err
	}
	return nil
}

// Log returns the node's key publication log, or nil if it runs none (no
// data directory, or the configuration names another publisher).
func (n *Node) Log() *tlog.Log {
	if n.chain == nil {
		return nil
	}
	return n.chain.log
}

// Witness returns the node's witness of the other nodes' logs, or nil if it
// runs no log.
func (n *Node) Witness() *witness.Witness {
	if n.chain == nil {
		return nil
	}
	return n.chain.witness
}

// ReceiptPolicy returns the verifier of log receipts the node's directory
// validators use (nil if the configuration set its own).
func (n *Node) ReceiptPolicy() *GridReceipts { return n.receipts }

// checkpointHandler serves the log's latest witnessed checkpoint, or, before
// any was witnessed (a node alone), the checkpoint signed by the log only.
func checkpointHandler(l *tlog.Log) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		cp, err := l.Checkpoint(ctx)
		if err != nil {
			cp, _, err = l.PublishedCheckpoint(ctx)
		}
		if err != nil {
			http.Error(w, "no checkpoint yet", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write(cp)
	})
}

// gridCosigner gathers cosignatures for the node's log from the grid's
// witnesses: the listed ones, or else the connected peers that speak the
// witness protocol, in peer ID order, at most max. It keeps one
// witness.Cosigner per set of witnesses, so consecutive rounds with the
// same witnesses send them consistency proofs from what they last cosigned.
type gridCosigner struct {
	w      *witness.Witness
	h      host.Host
	listed []peer.ID
	quorum int
	max    int

	mu   sync.Mutex
	key  string
	cur  *witness.Cosigner
	seen map[string]*witness.Cosigner
}

// Cosign implements tlog.Cosigner.
func (g *gridCosigner) Cosign(ctx context.Context, signed []byte, prove func(ctx context.Context, old, new uint64) ([][]byte, error)) ([]byte, error) {
	ids := g.candidates()
	if len(ids) < g.quorum {
		return nil, fmt.Errorf("node: cosign: %d witnesses reachable, quorum %d: %w", len(ids), g.quorum, witness.ErrNoQuorum)
	}
	c, err := g.cosignerFor(ids)
	if err != nil {
		return nil, err
	}
	return c.Cosign(ctx, signed, prove)
}

func (g *gridCosigner) candidates() []peer.ID {
	self := g.h.ID()
	var ids []peer.ID
	if len(g.listed) > 0 {
		for _, id := range g.listed {
			if id != self {
				ids = append(ids, id)
			}
		}
	} else {
		for _, id := range g.h.Network().Peers() {
			if id == self || g.h.Network().Connectedness(id) != network.Connected {
				continue
			}
			if ps, err := g.h.Peerstore().SupportsProtocols(id, g.w.Protocol()); err == nil && len(ps) > 0 {
				ids = append(ids, id)
			}
		}
	}
	slices.Sort(ids)
	if len(ids) > g.max {
		ids = ids[:g.max]
	}
	return ids
}

// cosignerFor returns the cosigner of the witness set ids. Cosigners of
// earlier sets are kept (bounded) so that a witness that drops out and comes
// back is still sent proofs from the size it knows.
func (g *gridCosigner) cosignerFor(ids []peer.ID) (*witness.Cosigner, error) {
	var kb strings.Builder
	for _, id := range ids {
		kb.WriteString(id.String())
		kb.WriteByte(',')
	}
	key := kb.String()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cur != nil && g.key == key {
		return g.cur, nil
	}
	if c := g.seen[key]; c != nil {
		g.key, g.cur = key, c
		return c, nil
	}
	peers := make([]witness.Peer, 0, len(ids))
	for _, id := range ids {
		v, err := witness.PeerWitnessVerifier(id)
		if err != nil {
			return nil, fmt.Errorf("node: cosign: %w", err)
		}
		peers = append(peers, witness.Peer{ID: id, Verifier: v})
	}
	c := g.w.NewCosigner(peers, g.quorum)
	if g.seen == nil || len(g.seen) >= 64 {
		g.seen = make(map[string]*witness.Cosigner)
	}
	g.seen[key] = c
	g.key, g.cur = key, c
	return c, nil
}

// maxCosignatures bounds the witness cosignatures a receipt's checkpoint is
// checked for.
const maxCosignatures = 32

// GridReceipts verifies receipts of any node's log on the grid
// (keyregistry.ReceiptVerifier): the checkpoint must be signed by the Ed25519
// identity key of the peer its origin names (witness.PeerLogKey), cosigned
// by at least Quorum grid witnesses other than that peer (of the listed
// ones, if any), and not from a log the node's witness caught in a split
// view.
type GridReceipts struct {
	quorum  int
	listed  map[peer.ID]bool
	witness atomic.Pointer[witness.Witness]
}

func newGridReceipts(quorum int, listed []peer.ID) *GridReceipts {
	g := &GridReceipts{quorum: quorum}
	if len(listed) > 0 {
		g.listed = make(map[peer.ID]bool, len(listed))
		for _, id := range listed {
			g.listed[id] = true
		}
	}
	return g
}

// Verify implements keyregistry.ReceiptVerifier.
func (g *GridReceipts) Verify(rc *chain.Receipt, r chain.Record) (chain.Checkpoint, error) {
	return g.policy(rc.Checkpoint).Verify(rc, r)
}

// policy returns the chain.Policy that counts the cosignatures signed may
// carry: one verifier per grid witness named in its signature lines.
func (g *GridReceipts) policy(signed []byte) *chain.Policy {
	p := &chain.Policy{LogKey: witness.PeerLogKey, Quorum: g.quorum, Distrusted: g.distrusted}
	origin, _, _ := bytes.Cut(signed, []byte("\n"))
	logPeer, _ := peer.Decode(strings.TrimPrefix(string(origin), witness.LogOriginPrefix))
	_, sigs, ok := bytes.Cut(signed, []byte("\n\n"))
	if !ok {
		return p
	}
	seen := map[peer.ID]bool{}
	for line := range strings.Lines(string(sigs)) {
		rest, ok := strings.CutPrefix(line, "— "+witness.WitnessNamePrefix)
		if !ok {
			continue
		}
		idText, _, _ := strings.Cut(rest, " ")
		id, err := peer.Decode(idText)
		if err != nil || id == logPeer || seen[id] || (g.listed != nil && !g.listed[id]) {
			continue
		}
		v, err := witness.PeerWitnessVerifier(id)
		if err != nil {
			continue
		}
		seen[id] = true
		p.Witnesses = append(p.Witnesses, v)
		if len(p.Witnesses) == maxCosignatures {
			break
		}
	}
	return p
}

func (g *GridReceipts) distrusted(origin string) bool {
	w := g.witness.Load()
	return w != nil && w.Distrusted(origin)
}
