package node_test

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/gateway/gatewaytest"
	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/node"
	"github.com/iagon/gridchat/wire"
)

// echoEnv makes the test binary run as the benchmark's WebSocket echo server (see TestHelperEchoServer).
const echoEnv = "GRIDCHAT_BENCH_ECHO_SERVER"

// TestHelperEchoServer is the baseline of BenchmarkDeliveryAgainstWebSocketEcho: run as a child process with
// echoEnv set, it serves a bare WebSocket echo (github.com/coder/websocket) on 127.0.0.1 and prints its address;
// it exits when its stdin closes. Run normally it checks that such a server echoes.
func TestHelperEchoServer(t *testing.T) {
	if os.Getenv(echoEnv) == "" {
		addr, stop := startEchoServer(t)
		defer stop()
		ctx := deliveryCtx(t)
		c, _, err := websocket.Dial(ctx, "ws://"+addr, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		if err := c.Write(ctx, websocket.MessageText, []byte("ping")); err != nil {
			t.Fatal(err)
		}
		if _, b, err := c.Read(ctx); err != nil || string(b) != "ping" {
			t.Fatalf("echo: %q %v", b, err)
		}
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		for {
			typ, b, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, b); err != nil {
				return
			}
		}
	})}
	go srv.Serve(ln)
	fmt.Println(ln.Addr().String())
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until the parent closes our stdin
	_ = srv.Close()
}

// startEchoServer starts the echo server as a child process and returns its address.
func startEchoServer(tb testing.TB) (string, func()) {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperEchoServer$")
	cmd.Env = append(os.Environ(), echoEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		tb.Fatalf("echo server: %v", err)
	}
	return strings.TrimSpace(line), func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	}
}

func percentiles(lat []time.Duration) (time.Duration, time.Duration) {
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100]
}

func median(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

// echoClient is the baseline's client: one WebSocket to the echo process and a reader that reports each
// message's round-trip time.
type echoClient struct {
	c    *websocket.Conn
	got  chan time.Duration
	size int
}

func newEchoClient(b *testing.B, addr string, size int) *echoClient {
	ctx := deliveryCtx(b)
	c, _, err := websocket.Dial(ctx, "ws://"+addr, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.CloseNow() })
	c.SetReadLimit(1 << 20)
	e := &echoClient{c: c, got: make(chan time.Duration, 1<<16), size: size}
	go func() {
		defer close(e.got)
		for {
			_, m, err := c.Read(ctx)
			if err != nil {
				return
			}
			e.got <- time.Duration(time.Now().UnixNano() - int64(binary.BigEndian.Uint64(m)))
		}
	}()
	return e
}

// run sends n messages, keeping window in flight (rate 0) or paced at rate per second, and returns the
// messages per second and the round-trip times.
func (e *echoClient) run(b *testing.B, n, window, rate int) (float64, []time.Duration) {
	ctx := deliveryCtx(b)
	msg := make([]byte, e.size)
	lat := make([]time.Duration, 0, n)
	sem := make(chan struct{}, window)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range n {
			d, ok := <-e.got
			if !ok {
				return
			}
			lat = append(lat, d)
			<-sem
		}
	}()
	var tick *time.Ticker
	if rate > 0 {
		tick = time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
	}
	start := time.Now()
	for range n {
		if tick != nil {
			<-tick.C
		}
		sem <- struct{}{}
		binary.BigEndian.PutUint64(msg, uint64(time.Now().UnixNano()))
		if err := e.c.Write(ctx, websocket.MessageText, msg); err != nil {
			b.Fatal(err)
		}
	}
	<-done
	if len(lat) != n {
		b.Fatal("echo connection failed")
	}
	return float64(n) / time.Since(start).Seconds(), lat
}

// gridPair is the grid's sender (on node 1) and receiver (on node 2).
type gridPair struct {
	ca, cb *gatewaytest.Client
	to     e2ee.DeviceID
	size   int
	seq    int
}

func newGridPair(b *testing.B, nodes []*node.Node, size int) *gridPair {
	alice, bob := registerAccount(b, nodes[0]), registerAccount(b, nodes[1])
	g := &gridPair{
		ca:   connect(b, nodes[0], alice.devs[0], gatewaytest.Options{}),
		cb:   connect(b, nodes[1], bob.devs[0], gatewaytest.Options{}),
		to:   bob.devs[0].ID(),
		size: size,
	}
	waitLocated(b, nodes[0], nodes[1], bob.devs[0])
	return g
}

// run sends n envelopes client → node 1 → node 2 → client, keeping window sends in flight (each answered
// "delivered" only after the receiving client's ack) or paced at rate per second, and returns the sends per
// second and the one-way latencies.
func (g *gridPair) run(b *testing.B, n, window, rate int) (float64, []time.Duration) {
	ctx := deliveryCtx(b)
	lat := make(chan time.Duration, n)
	// The receiver acknowledges what has arrived in one batched ack, as a client does when envelopes come
	// faster than it acknowledges them one by one.
	go func() {
		batch := make([]wire.EnvelopePush, 0, wire.MaxAcks)
		for got := 0; got < n; got += len(batch) {
			e, err := g.cb.NextEnvelope(ctx)
			if err != nil {
				close(lat)
				return
			}
			lat <- time.Duration(time.Now().UnixNano() - int64(binary.BigEndian.Uint64(e.Ciphertext)))
			batch = append(batch[:0], e)
		more:
			for len(batch) < cap(batch) && got+len(batch) < n {
				select {
				case p, ok := <-g.cb.Pushes():
					if !ok {
						break more
					}
					var e wire.EnvelopePush
					if err := wire.StrictUnmarshal(p.Body, &e); err != nil || p.Name != wire.PushEnvelope {
						close(lat)
						return
					}
					lat <- time.Duration(time.Now().UnixNano() - int64(binary.BigEndian.Uint64(e.Ciphertext)))
					batch = append(batch, e)
				default:
					break more
				}
			}
			_ = g.cb.AckMany(ctx, batch...)
		}
	}()
	payload := make([]byte, g.size)
	var tick *time.Ticker
	if rate > 0 {
		tick = time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
	}
	wait := func(ch <-chan wire.Response) {
		if r, err := gatewaytest.WaitSend(ctx, ch); err != nil || r.Results[0].Status != wire.StatusDelivered {
			b.Fatalf("send: %+v %v", r, err)
		}
	}
	start := time.Now()
	var inflight []<-chan wire.Response
	for range n {
		if tick != nil {
			<-tick.C
		}
		binary.BigEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
		g.seq++
		ch, err := g.ca.StartSend(ctx, msgID(g.seq), payload, g.to)
		if err != nil {
			b.Fatal(err)
		}
		inflight = append(inflight, ch)
		if len(inflight) == window {
			wait(inflight[0])
			inflight = inflight[1:]
		}
	}
	for _, ch := range inflight {
		wait(ch)
	}
	rate2 := float64(n) / time.Since(start).Seconds()
	out := make([]time.Duration, 0, n)
	for range n {
		d, ok := <-lat
		if !ok {
			b.Fatal("receiver failed")
		}
		out = append(out, d)
	}
	return rate2, out
}

// BenchmarkDeliveryAgainstWebSocketEcho compares 1 KiB envelopes client → node 1 → node 2 → client with a bare
// WebSocket echo to another process on this machine, in the same run: messages per second with a pipeline of
// 256, and p50/p99 latency at 1,000 messages per second. The throughput runs alternate, echo then grid, for
// several rounds, so that both see the same machine load; the reported figures are medians over the rounds,
// and throughput-ratio is the median of the rounds' grid/echo ratios. The grid's path has three hops
// (client → node 1 → node 2 → client) plus the acknowledgement's way back, the echo's one (a round trip), so
// hop-ratio (three times throughput-ratio) compares per hop. Run with -benchtime=1x.
func BenchmarkDeliveryAgainstWebSocketEcho(b *testing.B) {
	const (
		n      = 5000
		window = 256
		rate   = 1000
		size   = 1 << 10
		rounds = 5
	)
	addr, stop := startEchoServer(b)
	defer stop()
	nodes := gridtest.Swarm(b, 2, gridtest.InMemory(), gridtest.Configure(func(_ int, cfg *node.Config) {
		cfg.Delivery.WS.RequestsPerSecond = 1e6
		cfg.Delivery.WS.RequestBurst = 1e6
		cfg.Delivery.WS.AccountRequestsPerSecond = 1e6
		cfg.Delivery.WS.AccountRequestBurst = 1e6
	}))
	for b.Loop() {
		echo := newEchoClient(b, addr, size)
		grid := newGridPair(b, nodes, size)
		// Warm up both paths (connections, the deliver stream, caches).
		echo.run(b, 500, window, 0)
		grid.run(b, 500, window, 0)
		var echoRates, gridRates, ratios []float64
		for range rounds {
			e, _ := echo.run(b, n, window, 0)
			g, _ := grid.run(b, n, window, 0)
			echoRates, gridRates, ratios = append(echoRates, e), append(gridRates, g), append(ratios, g/e)
		}
		_, echoLat := echo.run(b, n, n, rate)
		_, gridLat := grid.run(b, n, window, rate)
		ep50, ep99 := percentiles(echoLat)
		gp50, gp99 := percentiles(gridLat)
		b.ReportMetric(median(echoRates), "echo-msgs/s")
		b.ReportMetric(median(gridRates), "grid-msgs/s")
		b.ReportMetric(median(ratios), "throughput-ratio")
		b.ReportMetric(3*median(ratios), "hop-ratio")
		b.ReportMetric(float64(ep50.Microseconds())/1000, "echo-p50-ms")
		b.ReportMetric(float64(ep99.Microseconds())/1000, "echo-p99-ms")
		b.ReportMetric(float64(gp50.Microseconds())/1000, "grid-p50-ms")
		b.ReportMetric(float64(gp99.Microseconds())/1000, "grid-p99-ms")
	}
}
