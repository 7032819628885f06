package node

import (
	"fmt"
	"maps"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/namespace"
	record "github.com/libp2p/go-libp2p-record"

	"github.com/iagon/gridchat/keyregistry"
)

// directoryNamespace is the datastore namespace of the key directory.
const directoryNamespace = "/keyregistry"

// LogDir is the directory, inside the data directory, of the node's key
// publication log (tiles, bundles, checkpoint). The log signs with the
// node's identity key (see identityEd25519).
const LogDir = "log"

// withDirectoryValidators returns extra plus the key directory's namespaces.
func withDirectoryValidators(extra map[string]record.Validator, vc keyregistry.ValidatorConfig) map[string]record.Validator {
	out := maps.Clone(extra)
	if out == nil {
		out = make(map[string]record.Validator)
	}
	maps.Copy(out, keyregistry.Validators(vc))
	return out
}

// startDirectory starts the key directory and adds its HTTP routes. Unless
// the configuration names a publisher, a node with a data directory hands
// every accepted statement to its own key publication log (startChain).
func (n *Node) startDirectory() error {
	d := n.cfg.Directory
	if d.Publisher == nil && n.chain != nil {
		d.Publisher = n.chain.log
	}
	dir, err := keyregistry.New(keyregistry.Config{
		Router:     n.dht,
		Datastore:  namespace.Wrap(n.store, ds.NewKey(directoryNamespace)),
		PubSub:     n.pubsub,
		Publisher:  d.Publisher,
		GatewayID:  []byte(n.host.ID()),
		Validator:  n.directoryValidator(),
		Limits:     d.Limits,
		Logger:     n.log.With("part", "directory"),
		Registerer: n.reg,
	})
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.dir = dir
	if err := dir.Routes(n.gw); err != nil {
		return fmt.Errorf("node: directory routes: %w", err)
	}
	return nil
}

// directoryValidator returns the directory's validator configuration: the
// configured one, verifying receipts with the grid's receipt policy unless
// the configuration brings its own publisher or verifier.
func (n *Node) directoryValidator() keyregistry.ValidatorConfig {
	v := n.cfg.Directory.Validator
	if v.Receipts == nil && n.receipts != nil {
		v.Receipts = n.receipts
	}
	return v
}

// registerDirectoryOps adds the directory's operations to the WebSocket API
// (after startDelivery made it).
func (n *Node) registerDirectoryOps() error {
	if err := n.dir.RegisterOps(n.deliv.hub); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	return nil
}
