package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
)

// fakeNode is a fixed gateway.Node: the gateway only reads these four facts.
type fakeNode struct {
	id    peer.ID
	addrs []multiaddr.Multiaddr
}

func (f fakeNode) ID() peer.ID                  { return f.id }
func (f fakeNode) Addrs() []multiaddr.Multiaddr { return f.addrs }
func (fakeNode) RoutingTableSize() int          { return 7 }
func (fakeNode) ConnectedPeers() int            { return 3 }

func newFakeNode(t *testing.T) fakeNode {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return fakeNode{id: id, addrs: []multiaddr.Multiaddr{
		multiaddr.StringCast("/ip4/127.0.0.1/tcp/7400"),
		multiaddr.StringCast("/ip4/127.0.0.1/udp/7400/quic-v1"),
	}}
}

func newServer(t *testing.T, reg *prometheus.Registry, node Node) *Server {
	t.Helper()
	s, err := New(Config{Addr: "127.0.0.1:0", Version: "v-test", Registry: reg}, node)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func TestHealthzInfoAndMetricsRoutes(t *testing.T) {
	reg := prometheus.NewRegistry()
	nodeCounter := prometheus.NewCounter(prometheus.CounterOpts{Name: "gridchat_test_node_only_total", Help: "test"})
	reg.MustRegister(nodeCounter)
	nodeCounter.Add(5)
	fn := newFakeNode(t)
	s := newServer(t, reg, fn)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}

	resp, body := get(t, s.URL()+"/healthz")
	if resp.StatusCode != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", resp.StatusCode, body)
	}

	resp, body = get(t, s.URL()+"/v1/info")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("/v1/info = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var info Info
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&info); err != nil {
		t.Fatal(err)
	}
	want := Info{PeerID: fn.id.String(), Addrs: []string{"/ip4/127.0.0.1/tcp/7400", "/ip4/127.0.0.1/udp/7400/quic-v1"},
		Version: "v-test", RoutingTableSize: 7, ConnectedPeers: 3}
	if info.PeerID != want.PeerID || strings.Join(info.Addrs, " ") != strings.Join(want.Addrs, " ") ||
		info.Version != want.Version || info.RoutingTableSize != 7 || info.ConnectedPeers != 3 {
		t.Errorf("/v1/info = %+v, want %+v", info, want)
	}

	resp, body = get(t, s.URL()+"/metrics")
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics = %d", resp.StatusCode)
	}
	// The node's own registry is served, with the gateway's request counter.
	for _, wantLine := range []string{
		"gridchat_test_node_only_total 5",
		`gridchat_gateway_http_requests_total{code="200",route="GET /healthz"} 1`,
	} {
		if !strings.Contains(body, wantLine) {
			t.Errorf("/metrics lacks %q", wantLine)
		}
	}
	// Only the built-in routes and methods exist.
	if resp, _ := get(t, s.URL()+"/nope"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("/nope = %d", resp.StatusCode)
	}
	r, err := http.Post(s.URL()+"/healthz", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /healthz = %d", r.StatusCode)
	}
}

func TestHandleAddsRoutesOnlyBeforeStart(t *testing.T) {
	s := newServer(t, prometheus.NewRegistry(), newFakeNode(t))
	if err := s.Handle("GET /v1/echo", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("echo"))
	})); err != nil {
		t.Fatal(err)
	}
	if err := s.Handle("GET /healthz", http.NotFoundHandler()); err == nil {
		t.Error("a conflicting pattern was accepted")
	}
	if err := s.Handle("BAD PATTERN WITH SPACES", http.NotFoundHandler()); err == nil {
		t.Error("a malformed pattern was accepted")
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if err := s.Handle("GET /late", http.NotFoundHandler()); !errors.Is(err, ErrStarted) {
		t.Errorf("Handle after Start = %v, want ErrStarted", err)
	}
	if err := s.Start(); !errors.Is(err, ErrStarted) {
		t.Errorf("second Start = %v, want ErrStarted", err)
	}
	if _, body := get(t, s.URL()+"/v1/echo"); body != "echo" {
		t.Errorf("/v1/echo = %q", body)
	}
}

func TestServerLimitsHeadersAndSetsTimeouts(t *testing.T) {
	s := newServer(t, prometheus.NewRegistry(), newFakeNode(t))
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	srv := s.srv
	if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.WriteTimeout <= 0 || srv.IdleTimeout <= 0 {
		t.Errorf("timeouts not all set: %+v", srv)
	}
	req, _ := http.NewRequest("GET", s.URL()+"/healthz", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 64<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("64 KiB header: status %d, want 431", resp.StatusCode)
	}
}

func TestNewReportsAddressInUseAndCloseReleasesIt(t *testing.T) {
	s := newServer(t, prometheus.NewRegistry(), newFakeNode(t))
	addr := s.Addr().String()
	if _, err := New(Config{Addr: addr, Registry: prometheus.NewRegistry()}, newFakeNode(t)); err == nil {
		t.Fatal("second server on the same address")
	}
	// Never started: Close releases the address.
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("address not released: %v", err)
	}
	ln.Close()
	if err := s.Start(); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}
}

func TestCloseWaitsForRequestsInFlight(t *testing.T) {
	s := newServer(t, prometheus.NewRegistry(), newFakeNode(t))
	entered := make(chan struct{})
	release := make(chan struct{})
	if err := s.Handle("GET /slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		_, _ = w.Write([]byte("done"))
	})); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		resp, err := http.Get(s.URL() + "/slow")
		if err != nil {
			got <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		got <- string(b)
	}()
	<-entered
	closed := make(chan error, 1)
	go func() { closed <- s.Close(context.Background()) }()
	select {
	case <-closed:
		t.Fatal("Close returned with a request in flight")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if body := <-got; body != "done" {
		t.Errorf("request in flight got %q", body)
	}
}

func TestCloseCancelsTheContextOfRequestsInFlight(t *testing.T) {
	s := newServer(t, prometheus.NewRegistry(), newFakeNode(t))
	entered := make(chan struct{})
	if err := s.Handle("GET /lookup", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A handler waiting on the grid (a DHT query) until its request's context ends.
		close(entered)
		<-r.Context().Done()
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
	})); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	got := make(chan int, 1)
	go func() {
		resp, err := http.Get(s.URL() + "/lookup")
		if err != nil {
			got <- 0
			return
		}
		resp.Body.Close()
		got <- resp.StatusCode
	}()
	<-entered
	// Without cancellation the handler never returns and Close runs into its deadline.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close with a lookup in flight: %v", err)
	}
	if code := <-got; code != http.StatusServiceUnavailable {
		t.Errorf("request in flight got status %d, want %d", code, http.StatusServiceUnavailable)
	}
}

func TestCloseDoesNotWaitForAConnectionThatSentNoRequest(t *testing.T) {
	s := newServer(t, prometheus.NewRegistry(), newFakeNode(t))
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	// A client's spare connection: dialled, never used. net/http's Shutdown counts it as busy for 5 s.
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for {
		s.mu.Lock()
		n := len(s.fresh)
		s.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond) // polling the server's accept; the test's deadline bounds it
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close with an idle new connection: %v", err)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("the connection without a request is still open after Close")
	}
}

func TestNewChecksConfig(t *testing.T) {
	fn := newFakeNode(t)
	if _, err := New(Config{Addr: "127.0.0.1:0"}, fn); err == nil {
		t.Error("no registry accepted")
	}
	if _, err := New(Config{Addr: "127.0.0.1:0", Registry: prometheus.NewRegistry()}, nil); err == nil {
		t.Error("no node accepted")
	}
	if _, err := New(Config{Addr: "nowhere", Registry: prometheus.NewRegistry()}, fn); err == nil {
		t.Error("bad address accepted")
	}
}
