package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/namespace"
	record "github.com/libp2p/go-libp2p-record"

	"github.com/iagon/gridchat/chain/tlog"
	"github.com/iagon/gridchat/keyregistry"
)

// directoryNamespace is the datastore namespace of the key directory.
const directoryNamespace = "/keyregistry"

// Key publication log files in the data directory.
const (
	// LogDir holds the node's key publication log (tiles, bundles, checkpoint).
	LogDir = "log"
	// LogKeyFile holds the Ed25519 seed (32 bytes, mode 0600) that signs the
	// log's checkpoints; it is not the libp2p identity key, so one key never
	// signs for two purposes.
	LogKeyFile = "log.key"
)

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
// the configuration names a publisher, a node with a data directory opens
// its own key publication log there and hands every accepted statement to
// it; the log closes after the directory (when the node's context ends).
func (n *Node) startDirectory() error {
	d := n.cfg.Directory
	if d.Publisher == nil && n.cfg.DataDir != "" {
		l, err := n.openLog()
		if err != nil {
			return err
		}
		n.wg.Go(func() {
			<-n.ctx.Done()
			if err := l.Close(); err != nil {
				n.log.Warn("close key publication log", "err", err)
			}
		})
		d.Publisher = l
	}
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

// openLog opens the node's key publication log, with origin
// "gridchat.grid/log/<peer ID>".
func (n *Node) openLog() (*tlog.Log, error) {
	key, err := loadOrCreateLogKey(filepath.Join(n.cfg.DataDir, LogKeyFile))
	if err != nil {
		return nil, err
	}
	l, err := tlog.Open(context.Background(), tlog.Config{
		Dir:    filepath.Join(n.cfg.DataDir, LogDir),
		Origin: "gridchat.grid/log/" + n.host.ID().String(),
		Key:    key,
		Logger: n.log.With("part", "log"),
	})
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	return l, nil
}

// loadOrCreateLogKey reads the log key's seed, or makes one the first time.
// Like the identity key, a seed readable by group or others, or of the wrong
// size, is refused rather than replaced.
func loadOrCreateLogKey(path string) (ed25519.PrivateKey, error) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		seed := make([]byte, ed25519.SeedSize)
		if _, err := rand.Read(seed); err != nil {
			return nil, fmt.Errorf("node: log key: %w", err)
		}
		if err := os.WriteFile(path, seed, 0o600); err != nil {
			return nil, fmt.Errorf("node: log key: %w", err)
		}
		return ed25519.NewKeyFromSeed(seed), nil
	case err != nil:
		return nil, fmt.Errorf("node: log key: %w", err)
	case fi.Mode().Perm()&0o077 != 0:
		return nil, fmt.Errorf("node: log key %s: %w", path, ErrKeyPermissions)
	case fi.Size() != ed25519.SeedSize:
		return nil, fmt.Errorf("node: log key %s: %w", path, ErrKeyCorrupt)
	}
	seed, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("node: log key: %w", err)
	}
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("node: log key %s: %w", path, ErrKeyCorrupt)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// registerDirectoryOps adds the directory's operations to the WebSocket API
// (after startDelivery made it).
func (n *Node) registerDirectoryOps() error {
	if err := n.dir.RegisterOps(n.deliv.hub); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	return nil
}
