package node

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"
)

// IdentityFile is the name of the node's identity key file in its data
// directory: a libp2p-protobuf-encoded Ed25519 private key, mode 0600.
const IdentityFile = "identity.key"

// maxIdentityFileSize caps what LoadOrCreateIdentity reads: an encoded
// Ed25519 key is 68 bytes.
const maxIdentityFileSize = 4 << 10

// Errors about the identity key that callers and operators act on.
var (
	// ErrKeyPermissions is returned when the identity key file can be read
	// by group or others.
	ErrKeyPermissions = errors.New("identity key file is readable by group or others (want mode 0600)")
	// ErrKeyCorrupt is returned when the identity key file does not hold an
	// Ed25519 libp2p private key.
	ErrKeyCorrupt = errors.New("identity key file is corrupt")
)

// LoadOrCreateIdentity returns the node identity kept in dataDir, creating
// dataDir (mode 0700) and a new Ed25519 key (mode 0600) the first time. It
// refuses a key file readable by group or others, or one that does not decode
// to an Ed25519 key, rather than replace it.
func LoadOrCreateIdentity(dataDir string) (crypto.PrivKey, error) {
	if dataDir == "" {
		return nil, errors.New("node: identity: no data directory")
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("node: identity: create data directory: %w", err)
	}
	path := filepath.Join(dataDir, IdentityFile)
	key, err := loadIdentity(path)
	if err == nil {
		return key, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return createIdentity(path)
}

func loadIdentity(path string) (crypto.PrivKey, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("node: identity: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("node: identity: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("node: identity %s: %w: not a regular file", path, ErrKeyCorrupt)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("node: identity %s: %w: mode is %04o", path, ErrKeyPermissions, st.Mode().Perm())
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxIdentityFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("node: identity: read %s: %w", path, err)
	}
	if len(raw) > maxIdentityFileSize {
		return nil, fmt.Errorf("node: identity %s: %w: larger than %d bytes", path, ErrKeyCorrupt, maxIdentityFileSize)
	}
	key, err := crypto.UnmarshalPrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("node: identity %s: %w: %v", path, ErrKeyCorrupt, err)
	}
	if key.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("node: identity %s: %w: key type %s, want Ed25519", path, ErrKeyCorrupt, key.Type())
	}
	return key, nil
}

// createIdentity writes a fresh key through a temporary file and a rename,
// so a crash never leaves a half-written key behind.
func createIdentity(path string) (crypto.PrivKey, error) {
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("node: identity: generate: %w", err)
	}
	raw, err := crypto.MarshalPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("node: identity: encode: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), IdentityFile+".tmp*")
	if err != nil {
		return nil, fmt.Errorf("node: identity: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("node: identity: %w", err)
	}
	if _, err := tmp.Write(raw); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("node: identity: write: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("node: identity: sync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("node: identity: %w", err)
	}
	// Link instead of rename: it fails if another process created the key
	// meanwhile, and then we use that one.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return loadIdentity(path)
		}
		return nil, fmt.Errorf("node: identity: install %s: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync() // best effort: make the new name durable
		d.Close()
	}
	return key, nil
}
