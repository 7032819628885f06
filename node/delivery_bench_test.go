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

// result of one measured run.
type result struct {
	msgsPerSec float64
	p50, p99   time.Duration
}

func percentiles(lat []time.Duration) (time.Duration, time.Duration) {
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100]
}

// echoRun measures the baseline: throughput with a pipeline of window messages, and round-trip latency of
// messages sent at rate per second.
func echoRun(b *testing.B, addr string, n, window, rate, size int) result {
	ctx := deliveryCtx(b)
	c, _, err := websocket.Dial(ctx, "ws://"+addr, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	msg := make([]byte, size)
	got := make(chan time.Duration, n)
	go func() {
		for range n {
			_, m, err := c.Read(ctx)
			if err != nil {
				close(got)
				return
			}
			got <- time.Duration(time.Now().UnixNano() - int64(binary.BigEndian.Uint64(m)))
		}
	}()
	// Throughput: keep window messages in flight.
	start := time.Now()
	sem := make(chan struct{}, window)
	done := make(chan struct{})
	go func() {
		for range n {
			<-got
			<-sem
		}
		close(done)
	}()
	for range n {
		sem <- struct{}{}
		binary.BigEndian.PutUint64(msg, uint64(time.Now().UnixNano()))
		if err := c.Write(ctx, websocket.MessageText, msg); err != nil {
			b.Fatal(err)
		}
	}
	<-done
	var r result
	r.msgsPerSec = float64(n) / time.Since(start).Seconds()
	// Latency at a fixed rate.
	got2 := make(chan time.Duration, n)
	go func() {
		for range n {
			_, m, err := c.Read(ctx)
			if err != nil {
				close(got2)
				return
			}
			got2 <- time.Duration(time.Now().UnixNano() - int64(binary.BigEndian.Uint64(m)))
		}
	}()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for range n {
		<-tick.C
		binary.BigEndian.PutUint64(msg, uint64(time.Now().UnixNano()))
		if err := c.Write(ctx, websocket.MessageText, msg); err != nil {
			b.Fatal(err)
		}
	}
	lat := make([]time.Duration, 0, n)
	for range n {
		lat = append(lat, <-got2)
	}
	r.p50, r.p99 = percentiles(lat)
	return r
}

// gridRun measures client → node 1 → node 2 → client: throughput with a pipeline of window sends (each
// acknowledged by the receiving client), and one-way latency of envelopes sent at rate per second.
func gridRun(b *testing.B, nodes []*node.Node, n, window, rate, size int) result {
	ctx := deliveryCtx(b)
	alice, bob := registerAccount(b, nodes[0]), registerAccount(b, nodes[1])
	ca := connect(b, nodes[0], alice.devs[0], gatewaytest.Options{})
	cb := connect(b, nodes[1], bob.devs[0], gatewaytest.Options{})
	waitLocated(b, nodes[0], nodes[1], bob.devs[0])
	to := bob.devs[0].ID()

	// The receiver acknowledges what has arrived in one batched ack, as a client does when envelopes come
	// faster than it acknowledges them one by one.
	recv := func(count int, out chan<- time.Duration) {
		batch := make([]wire.EnvelopePush, 0, wire.MaxAcks)
		for got := 0; got < count; got += len(batch) {
			e, err := cb.NextEnvelope(ctx)
			if err != nil {
				close(out)
				return
			}
			out <- time.Duration(time.Now().UnixNano() - int64(binary.BigEndian.Uint64(e.Ciphertext)))
			batch = append(batch[:0], e)
		more:
			for len(batch) < cap(batch) && got+len(batch) < count {
				select {
				case p, ok := <-cb.Pushes():
					if !ok {
						break more
					}
					var e wire.EnvelopePush
					if err := wire.StrictUnmarshal(p.Body, &e); err != nil || p.Name != wire.PushEnvelope {
						close(out)
						return
					}
					out <- time.Duration(time.Now().UnixNano() - int64(binary.BigEndian.Uint64(e.Ciphertext)))
					batch = append(batch, e)
				default:
					break more
				}
			}
			_ = cb.AckMany(ctx, batch...)
		}
	}
	payload := make([]byte, size)
	run := func(count int, paced bool, seq0 int) []time.Duration {
		lat := make(chan time.Duration, count)
		go recv(count, lat)
		var tick *time.Ticker
		if paced {
			tick = time.NewTicker(time.Second / time.Duration(rate))
			defer tick.Stop()
		}
		var inflight []<-chan wire.Response
		for i := range count {
			if paced {
				<-tick.C
			}
			binary.BigEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
			ch, err := ca.StartSend(ctx, msgID(seq0+i), payload, to)
			if err != nil {
				b.Fatal(err)
			}
			inflight = append(inflight, ch)
			if len(inflight) == window {
				if r, err := gatewaytest.WaitSend(ctx, inflight[0]); err != nil || r.Results[0].Status != wire.StatusDelivered {
					b.Fatalf("send: %+v %v", r, err)
				}
				inflight = inflight[1:]
			}
		}
		for _, ch := range inflight {
			if r, err := gatewaytest.WaitSend(ctx, ch); err != nil || r.Results[0].Status != wire.StatusDelivered {
				b.Fatalf("send: %+v %v", r, err)
			}
		}
		out := make([]time.Duration, 0, count)
		for range count {
			d, ok := <-lat
			if !ok {
				b.Fatal("receiver failed")
			}
			out = append(out, d)
		}
		return out
	}
	var r result
	start := time.Now()
	run(n, false, 0)
	r.msgsPerSec = float64(n) / time.Since(start).Seconds()
	r.p50, r.p99 = percentiles(run(n, true, n))
	return r
}

// BenchmarkDeliveryAgainstWebSocketEcho compares 1 KiB envelopes client → node 1 → node 2 → client with a bare
// WebSocket echo to another process on this machine, in the same run: messages per second with a pipeline of
// 256, and p50/p99 latency at 1,000 messages per second. Run with -benchtime=1x.
func BenchmarkDeliveryAgainstWebSocketEcho(b *testing.B) {
	const (
		n      = 5000
		window = 256
		rate   = 1000
		size   = 1 << 10
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
		echo := echoRun(b, addr, n, window, rate, size)
		grid := gridRun(b, nodes, n, window, rate, size)
		b.ReportMetric(echo.msgsPerSec, "echo-msgs/s")
		b.ReportMetric(grid.msgsPerSec, "grid-msgs/s")
		b.ReportMetric(grid.msgsPerSec/echo.msgsPerSec, "throughput-ratio")
		b.ReportMetric(float64(echo.p50.Microseconds())/1000, "echo-p50-ms")
		b.ReportMetric(float64(echo.p99.Microseconds())/1000, "echo-p99-ms")
		b.ReportMetric(float64(grid.p50.Microseconds())/1000, "grid-p50-ms")
		b.ReportMetric(float64(grid.p99.Microseconds())/1000, "grid-p99-ms")
	}
}
