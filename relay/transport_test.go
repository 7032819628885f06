package relay

import "github.com/libp2p/go-libp2p/p2p/transport/tcp"

func tcpTransport() any { return tcp.NewTCPTransport }
