package node_test

import (
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/iagon/gridchat/internal/gridtest"
)

func TestNodesConnectOverEachTransport(t *testing.T) {
	server := start(t, gridtest.NodeConfig(t, 0, gridtest.InMemory()))
	transports := []struct {
		name, listen, proto, security string
	}{
		{"tcp", "/ip4/127.0.0.1/tcp/0", "tcp", "/noise"},
		{"quic-v1", "/ip4/127.0.0.1/udp/0/quic-v1", "quic-v1", ""}, // QUIC brings its own TLS 1.3
		{"websocket", "/ip4/127.0.0.1/tcp/0/ws", "ws", "/noise"},
	}
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			cfg := gridtest.NodeConfig(t, 1, gridtest.InMemory())
			cfg.ListenAddrs = []string{tr.listen}
			client := start(t, cfg)

			var addrs []multiaddr.Multiaddr
			for _, a := range server.Addrs() {
				if hasProtocol(a, tr.proto) && (tr.proto != "tcp" || !hasProtocol(a, "ws")) {
					addrs = append(addrs, a)
				}
			}
			if len(addrs) == 0 {
				t.Fatalf("server does not listen on %s: %v", tr.name, server.Addrs())
			}
			ctx, cancel := contextWithTimeout(t, 10*time.Second)
			defer cancel()
			if err := client.Host().Connect(ctx, peer.AddrInfo{ID: server.ID(), Addrs: addrs}); err != nil {
				t.Fatalf("connect over %s: %v", tr.name, err)
			}
			conns := client.Host().Network().ConnsToPeer(server.ID())
			if len(conns) == 0 {
				t.Fatal("no connection")
			}
			c := conns[0]
			if !hasProtocol(c.RemoteMultiaddr(), tr.proto) {
				t.Errorf("connection went over %s, want %s", c.RemoteMultiaddr(), tr.name)
			}
			if tr.security != "" && string(c.ConnState().Security) != tr.security {
				t.Errorf("security %q, want %q", c.ConnState().Security, tr.security)
			}
			if tr.security != "" && !strings.HasPrefix(string(c.ConnState().StreamMultiplexer), "/yamux") {
				t.Errorf("muxer %q, want yamux", c.ConnState().StreamMultiplexer)
			}
		})
	}
}

func hasProtocol(a multiaddr.Multiaddr, name string) bool {
	for _, p := range a.Protocols() {
		if p.Name == name {
			return true
		}
	}
	return false
}
