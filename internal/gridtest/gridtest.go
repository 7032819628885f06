// Package gridtest starts in-process grids of real nodes on 127.0.0.1 for
// tests and benchmarks, and checks that nothing is left running afterwards.
//
// A test typically does:
//
//	func TestMain(m *testing.M) { gridtest.VerifyTestMain(m) }
//
//	func TestSomething(t *testing.T) {
//		nodes := gridtest.Swarm(t, 5)
//		...
//	}
package gridtest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	record "github.com/libp2p/go-libp2p-record"

	"github.com/iagon/gridchat/node"
)

// LoopbackListenAddrs returns the libp2p listen addresses of a test node:
// every transport of the grid on 127.0.0.1 with a free port.
func LoopbackListenAddrs() []string {
	return []string{
		"/ip4/127.0.0.1/tcp/0",
		"/ip4/127.0.0.1/udp/0/quic-v1",
		"/ip4/127.0.0.1/tcp/0/ws",
	}
}

// DefaultFormTimeout bounds how long Swarm waits for the routing tables.
const DefaultFormTimeout = 30 * time.Second

// Option changes how Swarm builds its nodes.
type Option func(*options)

type options struct {
	inMemory    bool
	validators  map[string]record.Validator
	tweak       func(i int, cfg *node.Config)
	wantPeers   int
	formTimeout time.Duration
	logLevel    slog.Level
	logOut      io.Writer
}

// InMemory gives every node an in-memory datastore instead of Pebble in
// t.TempDir().
func InMemory() Option { return func(o *options) { o.inMemory = true } }

// Validators adds DHT record namespaces to every node.
func Validators(v map[string]record.Validator) Option {
	return func(o *options) {
		if o.validators == nil {
			o.validators = make(map[string]record.Validator)
		}
		for ns, val := range v {
			o.validators[ns] = val
		}
	}
}

// Configure calls f on node i's configuration before the node starts, after
// Swarm has filled it in.
func Configure(f func(i int, cfg *node.Config)) Option {
	return func(o *options) {
		prev := o.tweak
		o.tweak = func(i int, cfg *node.Config) {
			if prev != nil {
				prev(i, cfg)
			}
			f(i, cfg)
		}
	}
}

// WaitForPeers makes Swarm wait until every routing table holds at least k
// peers (default: all n-1 others; 0 does not wait).
func WaitForPeers(k int) Option { return func(o *options) { o.wantPeers = k } }

// FormTimeout bounds the wait for the routing tables (default
// DefaultFormTimeout).
func FormTimeout(d time.Duration) Option { return func(o *options) { o.formTimeout = d } }

// Logs sends the nodes' logs at level and above to w (default: warnings and
// errors to the test's output; set GRIDTEST_LOG=debug for more).
func Logs(w io.Writer, level slog.Level) Option {
	return func(o *options) { o.logOut, o.logLevel = w, level }
}

// NodeConfig returns the configuration Swarm gives node i: loopback
// addresses with free ports, a gateway on 127.0.0.1:0, and a data directory
// in t.TempDir().
func NodeConfig(t testing.TB, i int, opts ...Option) node.Config {
	o := buildOptions(t, opts)
	return o.config(t, i)
}

func buildOptions(t testing.TB, opts []Option) *options {
	o := &options{wantPeers: -1, formTimeout: DefaultFormTimeout, logLevel: slog.LevelWarn}
	if lvl := os.Getenv("GRIDTEST_LOG"); lvl != "" {
		var l slog.Level
		if err := l.UnmarshalText([]byte(lvl)); err == nil {
			o.logLevel = l
		}
	}
	for _, opt := range opts {
		opt(o)
	}
	if o.logOut == nil {
		o.logOut = t.Output()
	}
	return o
}

func (o *options) config(t testing.TB, i int) node.Config {
	cfg := node.DefaultConfig()
	cfg.ListenAddrs = LoopbackListenAddrs()
	cfg.GatewayAddr = "127.0.0.1:0"
	cfg.InMemory = o.inMemory
	if !o.inMemory {
		cfg.DataDir = t.TempDir()
	}
	cfg.Validators = o.validators
	cfg.Logger = slog.New(slog.NewTextHandler(o.logOut, &slog.HandlerOptions{Level: o.logLevel})).
		With("node", i)
	cfg.ShutdownTimeout = 2 * time.Second
	if o.tweak != nil {
		o.tweak(i, &cfg)
	}
	return cfg
}

// Swarm starts n nodes on 127.0.0.1 and joins them into one grid: node 0
// starts alone, every other node bootstraps from node 0, and Swarm waits
// until every routing table holds all other nodes (see WaitForPeers). The
// nodes are closed by t.Cleanup; a test may close some itself earlier.
func Swarm(t testing.TB, n int, opts ...Option) []*node.Node {
	t.Helper()
	if n < 1 {
		t.Fatalf("gridtest: swarm of %d nodes", n)
	}
	o := buildOptions(t, opts)
	// Make every data directory before registering the cleanup that closes
	// the nodes: cleanups run last-registered first, and a datastore must be
	// closed before its directory is removed.
	cfgs := make([]node.Config, n)
	for i := range cfgs {
		cfgs[i] = o.config(t, i)
	}
	nodes := make([]*node.Node, 0, n)
	t.Cleanup(func() { closeAll(t, nodes) })

	ctx := context.Background()
	for i, cfg := range cfgs {
		if i > 0 && len(cfg.Bootstrap) == 0 {
			for _, a := range nodes[0].P2PAddrs() {
				cfg.Bootstrap = append(cfg.Bootstrap, a.String())
			}
		}
		nd, err := node.New(ctx, cfg)
		if err != nil {
			t.Fatalf("gridtest: start node %d: %v", i, err)
		}
		nodes = append(nodes, nd)
	}

	want := o.wantPeers
	if want < 0 {
		want = n - 1
	}
	if err := WaitFormed(ctx, nodes, want, o.formTimeout); err != nil {
		t.Fatalf("gridtest: %v", err)
	}
	return nodes
}

// WaitFormed waits until every node's routing table holds at least k peers,
// for at most timeout. Its error lists every node's table size.
func WaitFormed(ctx context.Context, nodes []*node.Node, k int, timeout time.Duration) error {
	if k <= 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, nd := range nodes {
		wg.Go(func() { _ = nd.DHT().WaitForPeers(ctx, k) })
	}
	wg.Wait()
	var short []string
	for i, nd := range nodes {
		if size := nd.RoutingTableSize(); size < k {
			short = append(short, fmt.Sprintf("node %d has %d", i, size))
		}
	}
	if len(short) > 0 {
		return fmt.Errorf("routing tables not formed within %v (want %d peers each): %s",
			timeout, k, strings.Join(short, ", "))
	}
	return nil
}

func closeAll(t testing.TB, nodes []*node.Node) {
	var wg sync.WaitGroup
	for i, nd := range nodes {
		wg.Go(func() {
			if err := nd.Close(); err != nil {
				t.Errorf("gridtest: close node %d: %v", i, err)
			}
		})
	}
	wg.Wait()
}
