package cardano

import (
	"testing"

	"github.com/blinklabs-io/gouroboros/ledger/common"
	"github.com/iagon/gridchat/chain/cardano/cardanotest"
)

const testMagic = cardanotest.Magic

// The in-process validating node and the wallet view live in cardanotest, so
// that other packages' tests (the node's anchoring) use them too.
type (
	testNode = cardanotest.Node
	wallet   = cardanotest.Wallet
)

var (
	newTestNode   = cardanotest.New
	newWalletView = cardanotest.NewWallet
)

func mustAccepted(t *testing.T, n *testNode, txID string) common.Transaction {
	t.Helper()
	tx, ok := n.Accepted(txID)
	if !ok {
		t.Fatalf("node did not apply tx %s", txID)
	}
	return tx
}
