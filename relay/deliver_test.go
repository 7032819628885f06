package relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/goleak"

	"github.com/iagon/gridchat/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreAnyFunction("github.com/libp2p/go-libp2p/p2p/transport/tcpreuse.(*ConnMgr).run"),
	)
}

// recordingLocal is an in-memory Local: it keeps what it was pushed, in order, and acknowledges at once, as a
// connected client that reads promptly would.
type recordingLocal struct {
	mu      sync.Mutex
	devices map[wire.DeviceID]bool
	got     []wire.Envelope
	hold    chan struct{} // when non-nil, outcomes wait for it to close
}

func (l *recordingLocal) Connected(d wire.DeviceID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.devices[d]
}

func (l *recordingLocal) Push(env wire.Envelope) <-chan Outcome {
	ch := make(chan Outcome, 1)
	l.mu.Lock()
	online := l.devices[env.Recipient]
	if online {
		l.got = append(l.got, env)
	}
	hold := l.hold
	l.mu.Unlock()
	if !online {
		ch <- Outcome{Status: wire.StatusOffline}
		return ch
	}
	if hold != nil {
		go func() { <-hold; ch <- Outcome{Status: wire.StatusDelivered} }()
		return ch
	}
	ch <- Outcome{Status: wire.StatusDelivered}
	return ch
}

func (l *recordingLocal) envelopes() []wire.Envelope {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]wire.Envelope(nil), l.got...)
}

// mapLocator answers presence lookups from a fixed table.
type mapLocator map[wire.DeviceID]Location

func (m mapLocator) Locations(_ context.Context, d wire.DeviceID) ([]Location, error) {
	if loc, ok := m[d]; ok {
		return []Location{loc}, nil
	}
	return nil, ErrNotOnline
}

func newHost(t testing.TB) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(), libp2p.NoTransports,
		libp2p.Transport(tcpTransport()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// newService starts a Service with cfg that is closed when the test ends.
func newService(t *testing.T, cfg Config) *Service {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func device(t *testing.T) wire.DeviceID {
	var d wire.DeviceID
	if _, err := rand.Read(d[:]); err != nil {
		t.Fatal(err)
	}
	return d
}

func msgID(i int) []byte {
	b := make([]byte, 16)
	copy(b, fmt.Sprintf("m%015d", i))
	return b
}

func TestDeliverAcrossHostsKeepsOrder(t *testing.T) {
	h1, h2 := newHost(t), newHost(t)
	sender, recipient, nobody := device(t), device(t), device(t)
	loc := mapLocator{recipient: {Gateway: h2.ID(), Addrs: h2.Addrs()}}
	local1 := &recordingLocal{devices: map[wire.DeviceID]bool{sender: true}}
	local2 := &recordingLocal{devices: map[wire.DeviceID]bool{recipient: true}}
	lim := DefaultLimits()
	lim.Window = 8
	s1 := newService(t, Config{Host: h1, Local: local1, Locator: loc, Limits: lim, Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))})
	newService(t, Config{Host: h2, Local: local2, Locator: loc, Limits: lim, Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))})

	ctx := context.Background()
	const n = 500
	var pend []*Pending
	for i := range n {
		req := &wire.SendRequest{MessageID: msgID(i), Ciphertext: []byte(fmt.Sprintf("ct-%d", i)), Recipients: [][]byte{recipient[:], nobody[:]}}
		p, err := s1.Dispatch(ctx, sender, req)
		if err != nil {
			t.Fatal(err)
		}
		pend = append(pend, p)
		if len(pend) == lim.Window { // a client with a bounded pipeline
			checkResp(t, pend[0].Wait(ctx))
			pend = pend[1:]
		}
	}
	for _, p := range pend {
		checkResp(t, p.Wait(ctx))
	}
	got := local2.envelopes()
	if len(got) != n {
		t.Fatalf("delivered %d envelopes, want %d", len(got), n)
	}
	for i, env := range got {
		if !bytes.Equal(env.MessageID[:], msgID(i)) || string(env.Ciphertext) != fmt.Sprintf("ct-%d", i) || env.Sender != sender || env.Recipient != recipient {
			t.Fatalf("envelope %d out of order or altered: %x %q", i, env.MessageID, env.Ciphertext)
		}
	}
}

func checkResp(t *testing.T, r wire.SendResponse) {
	t.Helper()
	if len(r.Results) != 2 || r.Results[0].Status != wire.StatusDelivered || r.Results[1].Status != wire.StatusOffline {
		t.Fatalf("results %+v", r.Results)
	}
}

func TestDeliverWindowAppliesBackpressure(t *testing.T) {
	h1, h2 := newHost(t), newHost(t)
	sender, recipient := device(t), device(t)
	loc := mapLocator{recipient: {Gateway: h2.ID(), Addrs: h2.Addrs()}}
	hold := make(chan struct{})
	local2 := &recordingLocal{devices: map[wire.DeviceID]bool{recipient: true}, hold: hold}
	lim := DefaultLimits()
	lim.Window = 4
	s1, _ := New(Config{Host: h1, Local: &recordingLocal{}, Locator: loc, Limits: lim})
	defer s1.Close()
	s2, _ := New(Config{Host: h2, Local: local2, Locator: loc, Limits: lim})
	defer s2.Close()

	var pend []*Pending
	for i := range lim.Window {
		p, err := s1.Dispatch(context.Background(), sender, &wire.SendRequest{MessageID: msgID(i), Ciphertext: []byte("x"), Recipients: [][]byte{recipient[:]}})
		if err != nil {
			t.Fatal(err)
		}
		pend = append(pend, p)
	}
	// The window is full: the next dispatch must wait, and give up with its context.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	p, err := s1.Dispatch(ctx, sender, &wire.SendRequest{MessageID: msgID(99), Ciphertext: []byte("x"), Recipients: [][]byte{recipient[:]}})
	if err != nil {
		t.Fatal(err)
	}
	if r := p.Wait(ctx); r.Results[0].Reason != wire.FailCancelled {
		t.Fatalf("dispatch beyond the window: %+v", r.Results)
	}
	close(hold)
	for _, p := range pend {
		if r := p.Wait(context.Background()); r.Results[0].Status != wire.StatusDelivered {
			t.Fatalf("%+v", r.Results)
		}
	}
	if n := len(local2.envelopes()); n != lim.Window {
		t.Fatalf("pushed %d, want %d", n, lim.Window)
	}
}

func TestDeliverToVanishedGatewayFails(t *testing.T) {
	h1, h2 := newHost(t), newHost(t)
	sender, recipient := device(t), device(t)
	loc := mapLocator{recipient: {Gateway: h2.ID(), Addrs: h2.Addrs()}}
	s1, _ := New(Config{Host: h1, Local: &recordingLocal{}, Locator: loc, Limits: Limits{DialTimeout: time.Second}})
	defer s1.Close()
	h2.Close() // no relay service, then no host at all
	p, err := s1.Dispatch(context.Background(), sender, &wire.SendRequest{MessageID: msgID(1), Ciphertext: []byte("x"), Recipients: [][]byte{recipient[:]}})
	if err != nil {
		t.Fatal(err)
	}
	if r := p.Wait(context.Background()); r.Results[0].Status != wire.StatusFailed || r.Results[0].Reason != wire.FailUnreachable {
		t.Fatalf("%+v", r.Results)
	}
	_ = peer.ID("")
}
