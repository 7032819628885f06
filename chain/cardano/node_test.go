package cardano

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

const testMagic = 42

// testNode is an in-process Cardano node: it serves node-to-client
// local-tx-submission on a unix socket and validates every transaction with
// gouroboros' Conway ledger rules against an in-memory UTxO set, applying
// the ones it accepts.
type testNode struct {
	t      *testing.T
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

func newTestNode(t *testing.T) *testNode {
	t.Helper()
	n := &testNode{
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

func (n *testNode) accept() {
	for {
		c, err := n.ln.Accept()
		if err != nil {
			return
		}
		errs := make(chan error, 8)
		oc, err := ouroboros.NewConnection(
			ouroboros.WithConnection(c),
			ouroboros.WithServer(true),
			ouroboros.WithNetworkMagic(testMagic),
			ouroboros.WithNodeToNode(false),
			ouroboros.WithErrorChan(errs),
			ouroboros.WithLocalTxSubmissionConfig(localtxsubmission.NewConfig(
				localtxsubmission.WithSubmitTxFunc(func(_ localtxsubmission.CallbackContext, tx localtxsubmission.MsgSubmitTxTransaction) error {
					raw, ok := tx.Raw.Content.([]byte)
					if !ok {
						return errors.New("transaction is not wrapped CBOR")
					}
					return n.submit(tx.EraId, raw)
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

func (n *testNode) close() {
	n.ln.Close()
	n.mu.Lock()
	conns := n.conns
	n.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// fund adds a genesis UTxO of lovelace to addr and returns it.
func (n *testNode) fund(addr common.Address, lovelace uint64, idx uint32) common.Utxo {
	u := common.Utxo{
		Id:     shelley.NewShelleyTransactionInput(hex.EncodeToString(make([]byte, 31))+fmt.Sprintf("%02x", idx), 0),
		Output: babbage.BabbageTransactionOutput{OutputAddress: addr, OutputAmount: mary.MaryTransactionOutputValue{Amount: lovelace}},
	}
	n.mu.Lock()
	n.utxos[utxoKey(u.Id)] = u
	n.mu.Unlock()
	return u
}

// submit validates a transaction with the ledger rules and applies it.
func (n *testNode) submit(era uint16, raw []byte) error {
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

func (n *testNode) utxosAt(addr common.Address) []common.Utxo {
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

// wallet is the anchoring wallet's view of the chain, as a chain-indexer
// backend would give it: the node's UTxOs and tip, unless overridden.
type wallet struct {
	*fixed.FixedChainContext
	node     *testNode
	override []common.Utxo
}

func newWalletView(n *testNode) *wallet {
	return &wallet{FixedChainContext: fixed.NewEmptyFixedChainContext(), node: n}
}

func (w *wallet) Tip() (uint64, error) {
	w.node.mu.Lock()
	defer w.node.mu.Unlock()
	return w.node.slot, nil
}

func (w *wallet) Utxos(addr common.Address) ([]common.Utxo, error) {
	if w.override != nil {
		return w.override, nil
	}
	return w.node.utxosAt(addr), nil
}
