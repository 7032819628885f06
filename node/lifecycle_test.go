package node_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"

	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/node"
)

// start runs a node with cfg and closes it at the end of the test.
func start(t *testing.T, cfg node.Config) *node.Node {
	t.Helper()
	n, err := node.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("node.New: %v", err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

func TestRestartOnSameDataDirKeepsPeerIDAndData(t *testing.T) {
	// Node 1 stores a DHT record on node 0 through the grid, and node 0
	// stores a value of its own; both must survive node 0's restart.
	nodes := gridtest.Swarm(t, 2, gridtest.Validators(testValidators))
	n0 := nodes[0]
	ctx := t.Context()
	if err := nodes[1].DHT().PutValue(ctx, "/test/kept", []byte("valid: kept")); err != nil {
		t.Fatal(err)
	}
	if got := storedUnder(t, n0, "test"); got != 1 {
		t.Fatalf("node 0 holds %d test records before restart, want 1", got)
	}
	key := ds.NewKey("/restart-test/value")
	if err := n0.Datastore().Put(ctx, key, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	id := n0.ID()
	cfg := gridtest.NodeConfig(t, 0, gridtest.Validators(testValidators))
	cfg.DataDir = n0.DataDir()
	if err := n0.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	again := start(t, cfg)
	if again.ID() != id {
		t.Errorf("peer ID after restart = %s, want %s", again.ID(), id)
	}
	v, err := again.Datastore().Get(ctx, key)
	if err != nil || string(v) != "still here" {
		t.Errorf("datastore value after restart = %q, %v; want %q", v, err, "still here")
	}
	if got := storedUnder(t, again, "test"); got != 1 {
		t.Errorf("node holds %d test records after restart, want 1", got)
	}
}

func TestCloseIsIdempotentAndLeavesNoGoroutines(t *testing.T) {
	cfg := gridtest.NodeConfig(t, 0)
	n, err := node.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	gridtest.VerifyNone(t)
}

func TestSwarmCloseLeavesNoGoroutines(t *testing.T) {
	t.Run("swarm", func(t *testing.T) {
		nodes := gridtest.Swarm(t, 3)
		if nodes[0].RoutingTableSize() != 2 {
			t.Fatalf("routing table size %d", nodes[0].RoutingTableSize())
		}
	})
	// The subtest's cleanup closed the swarm.
	gridtest.VerifyNone(t)
}

func TestSecondNodeOnSameDataDirIsRefused(t *testing.T) {
	cfg := gridtest.NodeConfig(t, 0)
	start(t, cfg)
	_, err := node.New(t.Context(), cfg)
	if err == nil {
		t.Fatal("a second node opened a data directory in use")
	}
	if !errors.Is(err, node.ErrDataDirInUse) {
		t.Errorf("error %q is not ErrDataDirInUse", err)
	}
}

func TestNewRefusesBadConfiguration(t *testing.T) {
	inUse, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer inUse.Close()
	busy := inUse.Addr().(*net.TCPAddr).Port

	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		change func(*node.Config)
		isCfg  bool   // want errors.Is(err, node.ErrConfig)
		want   string // in the message
	}{
		{"no data dir", func(c *node.Config) { c.DataDir = "" }, true, "data_dir"},
		{"bad listen address", func(c *node.Config) { c.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/x"} }, true, "listen_addrs"},
		{"bootstrap without peer ID", func(c *node.Config) { c.Bootstrap = []string{"/ip4/127.0.0.1/tcp/4001"} }, true, "bootstrap"},
		{"bad gateway address", func(c *node.Config) { c.GatewayAddr = "localhost" }, true, "gateway_addr"},
		{"bad protocol prefix", func(c *node.Config) { c.ProtocolPrefix = "grid chat" }, true, "protocol_prefix"},
		{"protocol prefix ending in /", func(c *node.Config) { c.ProtocolPrefix = "/grid/" }, true, "protocol_prefix"},
		{"protocol prefix /", func(c *node.Config) { c.ProtocolPrefix = "/" }, true, "protocol_prefix"},
		{"water marks crossed", func(c *node.Config) { c.ConnManager.LowWater, c.ConnManager.HighWater = 10, 5 }, true, "conn_manager"},
		{"negative gossip repair interval", func(c *node.Config) { c.GossipRepair.Interval = -time.Second }, true, "gossip_repair"},
		{"gateway port in use", func(c *node.Config) { c.GatewayAddr = fmt.Sprintf("127.0.0.1:%d", busy) }, false, "address already in use"},
		{"p2p port in use", func(c *node.Config) {
			c.ListenAddrs = []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", busy), "/ip4/127.0.0.1/udp/0/quic-v1"}
		}, false, "address in use"},
		{"unwritable data dir", func(c *node.Config) { c.DataDir = filepath.Join(notADir, "data") }, false, "data directory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := gridtest.NodeConfig(t, 0)
			tc.change(&cfg)
			n, err := node.New(t.Context(), cfg)
			if err == nil {
				n.Close()
				t.Fatal("node.New accepted the configuration")
			}
			if errors.Is(err, node.ErrConfig) != tc.isCfg {
				t.Errorf("errors.Is(err, ErrConfig) = %v, want %v (err: %v)", !tc.isCfg, tc.isCfg, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
	// Failed starts must not leave anything running.
	gridtest.VerifyNone(t)
}

func TestNewHonoursCancelledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := node.New(ctx, gridtest.NodeConfig(t, 0)); !errors.Is(err, context.Canceled) {
		t.Fatalf("node.New with a cancelled context: %v", err)
	}
}

func contextWithTimeout(t *testing.T, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.Context(), d)
}
