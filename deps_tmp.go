//go:build deps

package deps

import (
	_ "github.com/caarlos0/env/v11"
	_ "github.com/coder/websocket"
	_ "github.com/fxamacker/cbor/v2"
	_ "github.com/gtank/ristretto255"
	_ "github.com/ipfs/go-datastore"
	_ "github.com/ipfs/go-ds-pebble"
	_ "github.com/libp2p/go-libp2p"
	_ "github.com/libp2p/go-libp2p-kad-dht"
	_ "github.com/libp2p/go-libp2p-pubsub"
	_ "github.com/pelletier/go-toml/v2"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/rogpeppe/go-internal/testscript"
	_ "github.com/spf13/cobra"
	_ "go.uber.org/goleak"
	_ "golang.org/x/crypto/argon2"
	_ "golang.org/x/crypto/cryptobyte"
	_ "golang.org/x/crypto/chacha20poly1305"
	_ "golang.org/x/time/rate"
	_ "github.com/transparency-dev/tessera"
	_ "github.com/transparency-dev/merkle"
	_ "github.com/transparency-dev/formats/log"
	_ "golang.org/x/mod/sumdb/note"
	_ "filippo.io/torchwood"
	_ "github.com/mdp/qrterminal/v3"
	_ "rsc.io/qr"
)
