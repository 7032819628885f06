// Package cardano anchors the key-publication log's checkpoints on Cardano:
// each anchor is a transaction whose metadata holds the checkpoint under
// gridchat's own CIP-10 label, with a CIP-20 (label 674) memo. Transactions
// are built and signed with apollo on gouroboros ledger types and submitted
// through a configurable Submitter (a node's local-tx-submission socket).
package cardano

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	apollo "github.com/Salvionied/apollo/v2"
	"github.com/Salvionied/apollo/v2/backend"
	"github.com/blinklabs-io/gouroboros/ledger/common"
	"github.com/iagon/gridchat/chain"
	"golang.org/x/crypto/blake2b"
)

// MetadataLabel is gridchat's CIP-10 transaction metadata label for log
// checkpoints ("GC" as a 16-bit number, 0x4743).
const MetadataLabel = 18243

// MemoLabel is the CIP-20 transaction message label.
const MemoLabel = 674

// MetadataVersion is the version of the anchor metadata layout.
const MetadataVersion = 1

// Config configures an Anchorer. ChainContext, Submitter and Key are required.
type Config struct {
	// ChainContext supplies protocol parameters, the tip and the wallet's UTxOs.
	ChainContext backend.ChainContext
	// Submitter submits signed transactions.
	Submitter Submitter
	// Key is the payment key of the wallet that pays for anchors (an
	// enterprise address: no staking part).
	Key ed25519.PrivateKey
	// Network is the address network: 0 testnets, 1 mainnet.
	Network uint8
	// Chain names the chain in anchor references, e.g. "cardano:preprod".
	Chain string
	// ValiditySlots is how many slots after the tip a transaction stays valid.
	ValiditySlots uint64
	// Logger defaults to discarding.
	Logger *slog.Logger
}

// Submitter submits a signed transaction in CBOR; an error means the
// transaction was not accepted.
type Submitter interface {
	Submit(ctx context.Context, txCbor []byte) error
}

// Errors callers act on.
var (
	// ErrRejected reports a transaction the chain refused.
	ErrRejected = errors.New("cardano: transaction rejected")
	// ErrNoAnchor reports metadata that holds no gridchat anchor.
	ErrNoAnchor = errors.New("cardano: no anchor in metadata")
)

// Anchorer anchors checkpoints on Cardano.
type Anchorer struct {
	cfg    Config
	log    *slog.Logger
	wallet *keyWallet
	mu     sync.Mutex // one transaction at a time: they spend the same UTxOs
}

// New returns an Anchorer.
func New(cfg Config) (*Anchorer, error) {
	if cfg.ChainContext == nil || cfg.Submitter == nil || len(cfg.Key) != ed25519.PrivateKeySize {
		return nil, errors.New("cardano: new: chain context, submitter and key are required")
	}
	if cfg.ValiditySlots == 0 {
		cfg.ValiditySlots = 3600
	}
	if cfg.Chain == "" {
		cfg.Chain = "cardano"
	}
	w, err := newKeyWallet(cfg.Key, cfg.Network)
	if err != nil {
		return nil, err
	}
	a := &Anchorer{cfg: cfg, log: cfg.Logger, wallet: w}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	return a, nil
}

// Address returns the address that pays for anchors.
func (a *Anchorer) Address() common.Address { return a.wallet.addr }

// Metadata returns the transaction metadata that anchors cp, whose full
// signed note is signed:
//
//	18243: {"v": 1, "o": [origin in ≤64-byte pieces], "s": size,
//	        "r": root (32 bytes), "h": SHA-256 of the signed note}
//	674:   {"msg": ["gridchat log checkpoint", "size <n>", "root <base64>"]}
func Metadata(cp chain.Checkpoint, signed []byte) map[uint64]any {
	var origin []any
	for s := cp.Origin; len(s) > 0; {
		n := min(len(s), 64)
		origin = append(origin, s[:n])
		s = s[n:]
	}
	h := sha256.Sum256(signed)
	return map[uint64]any{
		MetadataLabel: map[string]any{
			"v": int64(MetadataVersion),
			"o": origin,
			"s": cp.Size,
			"r": append([]byte(nil), cp.Root[:]...),
			"h": h[:],
		},
		MemoLabel: map[string]any{
			"msg": []any{"gridchat log checkpoint", fmt.Sprintf("size %d", cp.Size), "root " + base64.StdEncoding.EncodeToString(cp.Root[:])},
		},
	}
}

// Anchored is a checkpoint read back from anchor metadata.
type Anchored struct {
	Origin   string
	Size     uint64
	Root     [32]byte
	NoteHash [32]byte
}

// ParseMetadata reads the anchor from a transaction's metadata.
func ParseMetadata(md common.TransactionMetadatum) (Anchored, error) {
	var an Anchored
	top, ok := md.(common.MetaMap)
	if !ok {
		if p, ok2 := md.(*common.MetaMap); ok2 && p != nil {
			top, ok = *p, true
		}
	}
	if !ok {
		return an, ErrNoAnchor
	}
	var body common.MetaMap
	found := false
	for _, p := range top.Pairs {
		if k, ok := p.Key.(common.MetaInt); ok && k.Value != nil && k.Value.IsUint64() && k.Value.Uint64() == MetadataLabel {
			body, found = p.Value.(common.MetaMap)
		}
	}
	if !found {
		return an, ErrNoAnchor
	}
	bad := func(why string) (Anchored, error) {
		return an, fmt.Errorf("cardano: anchor metadata: %s: %w", why, ErrNoAnchor)
	}
	fields := map[string]common.TransactionMetadatum{}
	for _, p := range body.Pairs {
		k, ok := p.Key.(common.MetaText)
		if !ok {
			return bad("non-text key")
		}
		fields[k.Value] = p.Value
	}
	if v, ok := fields["v"].(common.MetaInt); !ok || v.Value == nil || !v.Value.IsInt64() || v.Value.Int64() != MetadataVersion {
		return bad("unknown version")
	}
	ol, ok := fields["o"].(common.MetaList)
	if !ok {
		return bad("no origin")
	}
	for _, it := range ol.Items {
		t, ok := it.(common.MetaText)
		if !ok {
			return bad("bad origin")
		}
		an.Origin += t.Value
	}
	s, ok := fields["s"].(common.MetaInt)
	if !ok || s.Value == nil || !s.Value.IsUint64() {
		return bad("no size")
	}
	an.Size = s.Value.Uint64()
	r, ok := fields["r"].(common.MetaBytes)
	if !ok || len(r.Value) != 32 {
		return bad("no root")
	}
	copy(an.Root[:], r.Value)
	h, ok := fields["h"].(common.MetaBytes)
	if !ok || len(h.Value) != 32 {
		return bad("no note hash")
	}
	copy(an.NoteHash[:], h.Value)
	return an, nil
}

// BuildTx builds and signs the anchoring transaction of a checkpoint, and
// returns its CBOR and ID.
func (a *Anchorer) BuildTx(ctx context.Context, signedCheckpoint []byte) ([]byte, common.Blake2b256, error) {
	cp, err := checkpointOf(signedCheckpoint)
	if err != nil {
		return nil, common.Blake2b256{}, fmt.Errorf("cardano: anchor: %w", err)
	}
	b, err := a.build(ctx, Metadata(cp, signedCheckpoint))
	if err != nil {
		return nil, common.Blake2b256{}, err
	}
	b, err = b.Sign()
	if err != nil {
		return nil, common.Blake2b256{}, fmt.Errorf("cardano: sign anchor: %w", err)
	}
	raw, err := b.GetTxCbor()
	if err != nil {
		return nil, common.Blake2b256{}, fmt.Errorf("cardano: encode anchor: %w", err)
	}
	return raw, b.GetTx().Hash(), nil
}

// build balances an unsigned transaction that pays change back to the
// wallet and carries md.
func (a *Anchorer) build(ctx context.Context, md map[uint64]any) (*apollo.Apollo, error) {
	tip, err := a.cfg.ChainContext.Tip()
	if err != nil {
		return nil, fmt.Errorf("cardano: tip: %w", err)
	}
	utxos, err := a.cfg.ChainContext.Utxos(a.wallet.addr)
	if err != nil {
		return nil, fmt.Errorf("cardano: wallet UTxOs: %w", err)
	}
	if len(utxos) == 0 {
		return nil, fmt.Errorf("cardano: wallet %s has no UTxOs", a.wallet.addr)
	}
	b, err := apollo.New(a.cfg.ChainContext).WithContext(ctx).
		SetWallet(a.wallet).
		AddLoadedUTxOs(utxos...).
		SetShelleyMetadata(md).
		SetValidityStart(int64(tip)).
		SetTtl(int64(tip + a.cfg.ValiditySlots)).
		Complete()
	if err != nil {
		return nil, fmt.Errorf("cardano: build anchor: %w", err)
	}
	return b, nil
}

// Anchor builds, signs and submits the anchoring transaction of a signed
// checkpoint.
func (a *Anchorer) Anchor(ctx context.Context, signedCheckpoint []byte) (chain.AnchorRef, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	raw, id, err := a.BuildTx(ctx, signedCheckpoint)
	if err != nil {
		return chain.AnchorRef{}, err
	}
	if err := a.cfg.Submitter.Submit(ctx, raw); err != nil {
		return chain.AnchorRef{}, fmt.Errorf("cardano: submit anchor %x: %w", id.Bytes(), err)
	}
	cp, _ := checkpointOf(signedCheckpoint)
	a.log.Info("anchored checkpoint", "chain", a.cfg.Chain, "tx", hex.EncodeToString(id.Bytes()), "size", cp.Size)
	return chain.AnchorRef{Chain: a.cfg.Chain, TxID: hex.EncodeToString(id.Bytes()), Size: cp.Size, Root: cp.Root[:]}, nil
}

// Run anchors the head's checkpoint at every tick of every while the log
// grows, until ctx ends, and reports each anchor with the checkpoint it
// holds (a node passes tlog.Log.RecordAnchor). Failures are logged and
// retried at the next tick.
func (a *Anchorer) Run(ctx context.Context, head chain.Head, every <-chan time.Time, anchored func(ref chain.AnchorRef, signed []byte) error) {
	var last uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-every:
		}
		signed, err := head.Checkpoint(ctx)
		if err != nil {
			a.log.Warn("anchor: read checkpoint", "err", err)
			continue
		}
		cp, err := checkpointOf(signed)
		if err != nil || cp.Size == 0 || cp.Size == last {
			continue
		}
		ref, err := a.Anchor(ctx, signed)
		if err != nil {
			a.log.Warn("anchor checkpoint", "size", cp.Size, "err", err)
			continue
		}
		last = cp.Size
		if anchored != nil {
			if err := anchored(ref, signed); err != nil {
				a.log.Warn("anchor: record", "tx", ref.TxID, "err", err)
			}
		}
	}
}

// checkpointOf parses the body of a signed checkpoint; the caller is the
// log itself, so signatures are not checked here.
func checkpointOf(signed []byte) (chain.Checkpoint, error) {
	for i := 0; i+1 < len(signed); i++ {
		if signed[i] == '\n' && signed[i+1] == '\n' {
			return chain.ParseCheckpointText(signed[:i+1])
		}
	}
	return chain.Checkpoint{}, fmt.Errorf("checkpoint note: %w", chain.ErrMalformed)
}

// keyWallet is an apollo wallet over one Ed25519 payment key.
type keyWallet struct {
	key  ed25519.PrivateKey
	pkh  common.Blake2b224
	addr common.Address
}

func newKeyWallet(key ed25519.PrivateKey, network uint8) (*keyWallet, error) {
	pub := key.Public().(ed25519.PublicKey)
	h, err := blake2b.New(28, nil)
	if err != nil {
		return nil, err
	}
	h.Write(pub)
	var pkh common.Blake2b224
	copy(pkh[:], h.Sum(nil))
	addr, err := common.NewAddressFromParts(common.AddressTypeKeyNone, network, pkh[:], nil)
	if err != nil {
		return nil, fmt.Errorf("cardano: wallet address: %w", err)
	}
	return &keyWallet{key: key, pkh: pkh, addr: addr}, nil
}

func (w *keyWallet) Address() common.Address { return w.addr }

func (w *keyWallet) SignTxBody(h common.Blake2b256) (common.VkeyWitness, error) {
	return common.VkeyWitness{Vkey: w.key.Public().(ed25519.PublicKey), Signature: ed25519.Sign(w.key, h.Bytes())}, nil
}

func (w *keyWallet) PubKeyHash() common.Blake2b224 { return w.pkh }

func (w *keyWallet) StakePubKeyHash() common.Blake2b224 { return common.Blake2b224{} }

// MaxMetadataSize bounds the CBOR metadata ParseMetadataCBOR decodes.
const MaxMetadataSize = 16 << 10

// ParseMetadataCBOR decodes a transaction's metadata map from CBOR and reads
// the anchor from it.
func ParseMetadataCBOR(b []byte) (Anchored, error) {
	if len(b) > MaxMetadataSize {
		return Anchored{}, fmt.Errorf("cardano: anchor metadata of %d bytes: %w", len(b), ErrNoAnchor)
	}
	md, err := common.DecodeMetadatumRaw(b)
	if err != nil {
		return Anchored{}, fmt.Errorf("cardano: anchor metadata: %v: %w", err, ErrNoAnchor)
	}
	return ParseMetadata(md)
}
