// Package evm anchors the key-publication log's checkpoints on an EVM chain
// through any JSON-RPC endpoint: each anchor is a transaction to the
// anchoring account itself whose calldata holds the checkpoint, so no
// contract is needed and the anchor is read back from the transaction.
//
// It is a module of its own (github.com/iagon/gridchat/chain/evm) so that
// go-ethereum's dependency versions and build time stay out of the main
// module.
package evm

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/iagon/gridchat/chain"
)

// Magic starts the calldata of every anchor.
const Magic = "gridchat/v1/anchor"

// Client is what an Anchorer needs from a JSON-RPC endpoint
// (*ethclient.Client and the simulated backend's client have it).
type Client interface {
	ethereum.TransactionSender
	ethereum.TransactionReader
	ethereum.ChainIDReader
	ethereum.GasEstimator
	ethereum.GasPricer1559
	ethereum.ChainReader
	PendingNonceAt(ctx context.Context, account common.Address) (uint64, error)
}

// ErrNoAnchor reports a transaction that holds no gridchat anchor.
var ErrNoAnchor = errors.New("evm: no anchor in transaction")

// Anchorer anchors checkpoints from one account.
type Anchorer struct {
	client Client
	key    *ecdsa.PrivateKey
	from   common.Address
}

// New returns an Anchorer that pays with key.
func New(client Client, key *ecdsa.PrivateKey) *Anchorer {
	return &Anchorer{client: client, key: key, from: crypto.PubkeyToAddress(key.PublicKey)}
}

// Address returns the anchoring account.
func (a *Anchorer) Address() common.Address { return a.from }

// Calldata encodes an anchor:
//
//	"gridchat/v1/anchor" || uint16be(len(origin)) || origin || uint64be(size) || root (32) || SHA-256(signed note) (32)
func Calldata(cp chain.Checkpoint, signed []byte) []byte {
	var b bytes.Buffer
	b.WriteString(Magic)
	b.Write(binary.BigEndian.AppendUint16(nil, uint16(len(cp.Origin))))
	b.WriteString(cp.Origin)
	b.Write(binary.BigEndian.AppendUint64(nil, cp.Size))
	b.Write(cp.Root[:])
	h := sha256.Sum256(signed)
	b.Write(h[:])
	return b.Bytes()
}

// Anchored is a checkpoint read back from a transaction.
type Anchored struct {
	Origin   string
	Size     uint64
	Root     [32]byte
	NoteHash [32]byte
}

// ParseCalldata decodes anchor calldata strictly.
func ParseCalldata(d []byte) (Anchored, error) {
	var an Anchored
	rest, ok := bytes.CutPrefix(d, []byte(Magic))
	if !ok || len(rest) < 2 {
		return an, ErrNoAnchor
	}
	n := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) != n+8+32+32 || n == 0 {
		return an, fmt.Errorf("evm: anchor calldata of %d bytes: %w", len(d), ErrNoAnchor)
	}
	an.Origin = string(rest[:n])
	rest = rest[n:]
	an.Size = binary.BigEndian.Uint64(rest)
	copy(an.Root[:], rest[8:40])
	copy(an.NoteHash[:], rest[40:72])
	return an, nil
}

// Anchor sends the anchoring transaction of a signed checkpoint and returns
// its reference; Read confirms it once mined.
func (a *Anchorer) Anchor(ctx context.Context, signed []byte) (chain.AnchorRef, error) {
	cp, err := checkpointOf(signed)
	if err != nil {
		return chain.AnchorRef{}, fmt.Errorf("evm: anchor: %w", err)
	}
	data := Calldata(cp, signed)
	chainID, err := a.client.ChainID(ctx)
	if err != nil {
		return chain.AnchorRef{}, fmt.Errorf("evm: chain id: %w", err)
	}
	nonce, err := a.client.PendingNonceAt(ctx, a.from)
	if err != nil {
		return chain.AnchorRef{}, fmt.Errorf("evm: nonce: %w", err)
	}
	tip, err := a.client.SuggestGasTipCap(ctx)
	if err != nil {
		return chain.AnchorRef{}, fmt.Errorf("evm: gas tip: %w", err)
	}
	head, err := a.client.HeaderByNumber(ctx, nil)
	if err != nil {
		return chain.AnchorRef{}, fmt.Errorf("evm: head: %w", err)
	}
	feeCap := new(big.Int).Add(tip, new(big.Int).Mul(head.BaseFee, big.NewInt(2)))
	to := a.from
	gas, err := a.client.EstimateGas(ctx, ethereum.CallMsg{From: a.from, To: &to, Data: data})
	if err != nil {
		return chain.AnchorRef{}, fmt.Errorf("evm: estimate gas: %w", err)
	}
	tx, err := types.SignNewTx(a.key, types.LatestSignerForChainID(chainID), &types.DynamicFeeTx{
		ChainID: chainID, Nonce: nonce, GasTipCap: tip, GasFeeCap: feeCap, Gas: gas, To: &to, Data: data,
	})
	if err != nil {
		return chain.AnchorRef{}, fmt.Errorf("evm: sign: %w", err)
	}
	if err := a.client.SendTransaction(ctx, tx); err != nil {
		return chain.AnchorRef{}, fmt.Errorf("evm: send: %w", err)
	}
	return chain.AnchorRef{Chain: "evm:" + chainID.String(), TxID: tx.Hash().Hex(), Size: cp.Size, Root: cp.Root[:]}, nil
}

// Read returns the anchor held by a mined transaction, checking that it
// succeeded and was sent by this anchorer's account.
func (a *Anchorer) Read(ctx context.Context, txID string) (Anchored, uint64, error) {
	h := common.HexToHash(txID)
	rcpt, err := a.client.TransactionReceipt(ctx, h)
	if err != nil {
		return Anchored{}, 0, fmt.Errorf("evm: receipt of %s: %w", txID, err)
	}
	if rcpt.Status != types.ReceiptStatusSuccessful {
		return Anchored{}, 0, fmt.Errorf("evm: anchor %s failed", txID)
	}
	tx, _, err := a.client.TransactionByHash(ctx, h)
	if err != nil {
		return Anchored{}, 0, fmt.Errorf("evm: transaction %s: %w", txID, err)
	}
	from, err := types.Sender(types.LatestSignerForChainID(tx.ChainId()), tx)
	if err != nil || from != a.from {
		return Anchored{}, 0, fmt.Errorf("evm: anchor %s not sent by %s", txID, a.from)
	}
	an, err := ParseCalldata(tx.Data())
	return an, rcpt.BlockNumber.Uint64(), err
}

func checkpointOf(signed []byte) (chain.Checkpoint, error) {
	i := bytes.Index(signed, []byte("\n\n"))
	if i < 0 {
		return chain.Checkpoint{}, chain.ErrMalformed
	}
	return chain.ParseCheckpointText(signed[:i+1])
}
