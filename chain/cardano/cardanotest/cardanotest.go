// Package cardanotest runs an in-process Cardano node for tests: it serves
// the Ouroboros node-to-client local-tx-submission protocol on a unix socket
// and validates every transaction with gouroboros' Conway ledger rules
// against an in-memory UTxO set, applying the ones it accepts, so unsigned,
// underfunded, expired and double-spending transactions are refused for
// real. Wallet is the chain-indexer view (protocol parameters, tip, UTxOs)
// that transaction builders need beside it.
package cardanotest

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"

	"github.com/Salvionied/apollo/v2/backend/fixed"
	ouroboros "github.com/blinklabs-io/gouroboros"
	"github.com/blinklabs-io/gouroboros/ledger"
	"github.com/blinklabs-io/gouroboros/ledger/babbage"
	"github.com/blinklabs-io/gouroboros/ledger/common"
	"github.com/blinklabs-io/gouroboros/ledger/conway"
	"github.com/blinklabs-io/gouroboros/ledger/mary"
	"github.com/blinklabs-io/gouroboros/ledger/shelley"
	"github.com/blinklabs-io/gouroboros/protocol/localtxsubmission"
	mockledger "github.com/blinklabs-io/ouroboros-mock/ledger"
)

// Magic is the network magic the node speaks.
const Magic = 42

// Node is an in-process Cardano node: it serves node-to-client
// local-tx-submission on a unix socket and validates every transaction with
// gouroboros' Conway ledger rules against an in-memory UTxO set, applying
// the ones it accepts.
type Node struct {
	t      testing.TB
	socket string
	ln     net.Listener
	pp     conway.ConwayProtocolParameters

	mu       sync.Mutex
	slot     uint64
	utxos    map[string]common.Utxo
	accepted map[string]common.Transaction
	rejected []error

	wg    sync.WaitGroup
	conns []*ouroboros.Connection
}

// nodeRules are gouroboros' Conway UTxO rules plus its Shelley time-to-live
// rule: gouroboros v0.194.0's Conway list checks only the lower bound of the
// validity interval, so without it an expired transaction would pass.
var nodeRules = append(append([]common.UtxoValidationRuleFunc{}, conway.UtxoValidationRules...), shelley.UtxoValidateTimeToLive)

func utxoKey(in common.TransactionInput) string {
	return fmt.Sprintf("%x#%d", in.Id().Bytes(), in.Index())
}

// New starts a node; t.Cleanup stops it.
func New(t testing.TB) *Node {
	t.Helper()
	n := &Node{
		t: t, socket: filepath.Join(t.TempDir(), "node.sock"),
		pp: mockledger.NewMockConwayProtocolParams(), slot: 1000,
		utxos: map[string]common.Utxo{}, accepted: map[string]common.Transaction{},
	}
	ln, err := net.Listen("unix", n.socket)
	if err != nil {
		t.Fatal(err)
	}
	n.ln = ln
	n.wg.Go(n.accept)
	t.Cleanup(n.close)
	return n
}

// Socket returns the path of the node's unix socket.
func (n *Node) Socket() string { return n.socket }

// Accepted returns the transaction the node applied with ID txID (hex).
func (n *Node) Accepted(txID string) (common.Transaction, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	tx, ok := n.accepted[txID]
	return tx, ok
}

// AcceptedCount returns how many transactions the node applied.
func (n *Node) AcceptedCount() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.accepted)
}

// Rejected returns the ledger errors of the transactions the node refused.
func (n *Node) Rejected() []error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]error(nil), n.rejected...)
}

// AdvanceSlot moves the node's tip by d slots (negative moves it back).
func (n *Node) AdvanceSlot(d int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.slot = uint64(int64(n.slot) + d)
}

func (n *Node) accept() {
	for {
		c, err := n.ln.Accept()
		if err != nil {
			return
		}
		errs := make(chan error, 8)
		oc, err := ouroboros.NewConnection(
			ouroboros.WithConnection(c),
			ouroboros.WithServer(true),
			ouroboros.WithNetworkMagic(Magic),
			ouroboros.WithNodeToNode(false),
			ouroboros.WithErrorChan(errs),
			ouroboros.WithLocalTxSubmissionConfig(localtxsubmission.NewConfig(
				localtxsubmission.WithSubmitTxFunc(func(_ localtxsubmission.CallbackContext, tx localtxsubmission.MsgSubmitTxTransaction) error {
					raw, ok := tx.Raw.Content.([]byte)
					if !ok {
						return errors.New("transaction is not wrapped CBOR")
					}
					return n.Submit(tx.EraId, raw)
				}),
			)),
		)
		if err != nil {
			c.Close()
			continue
		}
		n.mu.Lock()
		n.conns = append(n.conns, oc)
		n.mu.Unlock()
		n.wg.Go(func() {
			for range errs {
			}
		})
	}
}

func (n *Node) close() {
	n.ln.Close()
	n.mu.Lock()
	conns := n.conns
	n.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// Fund adds a genesis UTxO of lovelace to addr and returns it.
func (n *Node) Fund(addr common.Address, lovelace uint64, idx uint32) common.Utxo {
	u := common.Utxo{
		Id:     shelley.NewShelleyTransactionInput(hex.EncodeToString(make([]byte, 31))+fmt.Sprintf("%02x", idx), 0),
		Output: babbage.BabbageTransactionOutput{OutputAddress: addr, OutputAmount: mary.MaryTransactionOutputValue{Amount: lovelace}},
	}
	n.mu.Lock()
	n.utxos[utxoKey(u.Id)] = u
	n.mu.Unlock()
	return u
}

// Submit validates a transaction of era (CBOR) with the ledger rules and
// applies it, as the local-tx-submission server does; front ends of other
// protocols (a Blockfrost-compatible HTTP gateway) call it.
func (n *Node) Submit(era uint16, raw []byte) error {
	if era != ledger.EraIdConway {
		return fmt.Errorf("era %d not supported", era)
	}
	tx, err := ledger.NewTransactionFromCbor(ledger.TxTypeConway, raw)
	if err != nil {
		return fmt.Errorf("decode transaction: %w", err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	ls := mockledger.NewLedgerStateBuilder().
		WithNetworkId(0).
		WithUtxoById(func(in common.TransactionInput) (common.Utxo, error) {
			u, ok := n.utxos[utxoKey(in)]
			if !ok {
				return common.Utxo{}, fmt.Errorf("input %s not found", utxoKey(in))
			}
			return u, nil
		}).Build()
	if err := common.VerifyTransaction(tx, n.slot, ls, &n.pp, nodeRules); err != nil {
		n.rejected = append(n.rejected, err)
		return err
	}
	for _, in := range tx.Inputs() {
		delete(n.utxos, utxoKey(in))
	}
	id := tx.Hash()
	for i, out := range tx.Outputs() {
		in := shelley.NewShelleyTransactionInput(hex.EncodeToString(id.Bytes()), i)
		n.utxos[utxoKey(in)] = common.Utxo{Id: in, Output: out}
	}
	n.accepted[hex.EncodeToString(id.Bytes())] = tx
	return nil
}

// UtxosAt returns the node's UTxOs at addr.
func (n *Node) UtxosAt(addr common.Address) []common.Utxo {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []common.Utxo
	for _, u := range n.utxos {
		if u.Output.Address().String() == addr.String() {
			out = append(out, u)
		}
	}
	return out
}

// Wallet is a wallet's view of the chain, as a chain-indexer backend would
// give it (an apollo backend.ChainContext): fixed protocol parameters, and
// the node's tip and UTxOs, unless Override is set.
type Wallet struct {
	*fixed.FixedChainContext
	node *Node

	mu       sync.Mutex
	override []common.Utxo
}

// NewWallet returns the chain view of n.
func NewWallet(n *Node) *Wallet {
	return &Wallet{FixedChainContext: fixed.NewEmptyFixedChainContext(), node: n}
}

// Override makes Utxos return utxos (nil: the node's again), e.g. to make a
// builder spend an input the node does not have.
func (w *Wallet) Override(utxos []common.Utxo) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.override = utxos
}

// Tip returns the node's slot.
func (w *Wallet) Tip() (uint64, error) {
	w.node.mu.Lock()
	defer w.node.mu.Unlock()
	return w.node.slot, nil
}

// Utxos returns the UTxOs at addr.
func (w *Wallet) Utxos(addr common.Address) ([]common.Utxo, error) {
	w.mu.Lock()
	o := w.override
	w.mu.Unlock()
	if o != nil {
		return o, nil
	}
	return w.node.UtxosAt(addr), nil
}
