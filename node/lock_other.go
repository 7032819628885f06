//go:build !unix

package node

import (
	"fmt"
	"os"
	"path/filepath"
)

// lockDataDir creates dataDir/LockFile. Without flock on this platform it
// cannot detect a second node on the same directory; the datastore's own
// lock still refuses one.
func lockDataDir(dataDir string) (*os.File, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("node: create data directory: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dataDir, LockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("node: data directory: %w", err)
	}
	return f, nil
}
