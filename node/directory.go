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

// withDirectoryValidators returns extra plus the key directory's namespaces.
func withDirectoryValidators(extra map[string]record.Validator, vc keyregistry.ValidatorConfig) map[string]record.Validator {
	out := maps.Clone(extra)
	if out == nil {
		out = make(map[string]record.Validator)
	}
	maps.Copy(out, keyregistry.Validators(vc))
	return out
}

// startDirectory starts the key directory and adds its HTTP routes.
func (n *Node) startDirectory() error {
	d := n.cfg.Directory
	dir, err := keyregistry.New(keyregistry.Config{
		Router:     n.dht,
		Datastore:  namespace.Wrap(n.store, ds.NewKey(directoryNamespace)),
		PubSub:     n.pubsub,
		Publisher:  d.Publisher,
		GatewayID:  []byte(n.host.ID()),
		Validator:  d.Validator,
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
