package witness

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"

	"filippo.io/torchwood"
	"github.com/iagon/gridchat/chain"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/mod/sumdb/note"
)

// Name prefixes of logs and witnesses on the grid.
const (
	LogOriginPrefix   = "gridchat.grid/log/"
	WitnessNamePrefix = "gridchat.grid/witness/"
)

// LogOrigin returns the checkpoint origin of the log run by peer id.
func LogOrigin(id peer.ID) string { return LogOriginPrefix + id.String() }

// WitnessName returns the cosignature key name of the witness run by peer id.
func WitnessName(id peer.ID) string { return WitnessNamePrefix + id.String() }

// logPeer returns the peer that runs the log origin, or "" if origin is not
// a grid log.
func logPeer(origin string) peer.ID {
	s, ok := strings.CutPrefix(origin, LogOriginPrefix)
	if !ok {
		return ""
	}
	id, err := peer.Decode(s)
	if err != nil {
		return ""
	}
	return id
}

func peerEd25519(id peer.ID) (ed25519.PublicKey, error) {
	pk, err := id.ExtractPublicKey()
	if err != nil {
		return nil, fmt.Errorf("witness: key of %s: %w", id, err)
	}
	if pk.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("witness: key of %s is not Ed25519", id)
	}
	raw, err := pk.Raw()
	if err != nil {
		return nil, fmt.Errorf("witness: key of %s: %w", id, err)
	}
	return ed25519.PublicKey(raw), nil
}

// PeerLogKey resolves a grid log origin ("gridchat.grid/log/<peerID>") to
// the verifier of its checkpoints: the Ed25519 identity key of the peer.
func PeerLogKey(origin string) (note.Verifier, error) {
	id := logPeer(origin)
	if id == "" {
		return nil, fmt.Errorf("witness: %q is not a grid log origin", origin)
	}
	pub, err := peerEd25519(id)
	if err != nil {
		return nil, err
	}
	return chain.NewLogVerifier(origin, pub)
}

// PeerWitnessVerifier returns the cosignature verifier of the witness run by
// peer id (whose cosigning key is its Ed25519 identity key).
func PeerWitnessVerifier(id peer.ID) (note.Verifier, error) {
	pub, err := peerEd25519(id)
	if err != nil {
		return nil, err
	}
	name := WitnessName(id)
	key := append([]byte{4}, pub...) // signed-note algorithm 4: cosignature/v1
	h := sha256.New()
	h.Write([]byte(name + "\n"))
	h.Write(key)
	hash := binary.BigEndian.Uint32(h.Sum(nil))
	v, err := torchwood.NewCosignatureVerifier(fmt.Sprintf("%s+%08x+%s", name, hash, base64.StdEncoding.EncodeToString(key)))
	if err != nil {
		return nil, fmt.Errorf("witness: verifier of %s: %w", id, err)
	}
	return v, nil
}
