package node

import (
	"fmt"
	"maps"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/namespace"
	record "github.com/libp2p/go-libp2p-record"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/keyregistry"
	"github.com/iagon/gridchat/wire"
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
// every accepted statement to its own key publication log (startChain), and
// every device the directory learns was revoked loses its mailbox on this
// node and its connections here (revoked).
func (n *Node) startDirectory() error {
	d := n.cfg.Directory
	if d.Publisher == nil && n.chain != nil {
		d.Publisher = n.chain.log
	}
	dir, err := keyregistry.New(keyregistry.Config{
		Router:         n.dht,
		Datastore:      namespace.Wrap(n.store, ds.NewKey(directoryNamespace)),
		PubSub:         n.pubsub,
		ProtocolPrefix: n.protocolPrefix(),
		Publisher:      d.Publisher,
		OnRevoked:      n.revoked,
		GatewayID:      []byte(n.host.ID()),
		Validator:      n.directoryValidator(),
		Limits:         d.Limits,
		Logger:         n.log.With("part", "directory"),
		Registerer:     n.reg,
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

// revocationQueue bounds the revocations waiting for the node to act on them.
const revocationQueue = 1024

// revoked is the directory's OnRevoked hook: it queues dev for
// revocationLoop, so the directory's gossip loop never waits on the mailbox
// store, and revocations learnt while the node starts are acted on once its
// services run.
func (n *Node) revoked(dev e2ee.DeviceID) {
	select {
	case n.revocations <- dev:
	default:
		// The mailbox replicas refuse the device's envelopes anyway once
		// their own directory learns of the revocation.
		n.log.Warn("revocation queue full; mailbox kept until the next announcement", "device", dev.String())
	}
}

// revocationLoop drops each revoked device's mailbox on this node and cuts
// its WebSocket connections here, until the node closes.
func (n *Node) revocationLoop() {
	for {
		select {
		case <-n.loopCtx.Done():
			return
		case dev := <-n.revocations:
			id := wire.DeviceID(dev)
			if err := n.mbox.Revoke(n.loopCtx, id); err != nil && n.loopCtx.Err() == nil {
				n.log.Warn("drop revoked device's mailbox", "device", dev.String(), "err", err)
			}
			if k := n.deliv.hub.Disconnect(id, "device revoked"); k > 0 {
				n.log.Info("disconnected revoked device", "device", dev.String(), "connections", k)
			}
		}
	}
}
