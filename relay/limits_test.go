package relay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/iagon/gridchat/wire"
)

// TestSendOverMaxCiphertextOrMaxRecipientsRefusedTooLarge: a send whose ciphertext exceeds MaxCiphertext, or
// whose recipient list exceeds MaxRecipients, is refused too_large by Dispatch before anything is delivered; a
// send at both limits goes through.
func TestSendOverMaxCiphertextOrMaxRecipientsRefusedTooLarge(t *testing.T) {
	h1, h2 := newHost(t), newHost(t)
	sender := device(t)
	lim := Limits{MaxCiphertext: 100, MaxRecipients: 3}
	recipients := make([]wire.DeviceID, lim.MaxRecipients+1)
	loc := mapLocator{}
	online := map[wire.DeviceID]bool{}
	for i := range recipients {
		recipients[i] = device(t)
		loc[recipients[i]] = Location{Gateway: h2.ID(), Addrs: h2.Addrs()}
		online[recipients[i]] = true
	}
	local2 := &recordingLocal{devices: online}
	s1 := newService(t, Config{Host: h1, Local: &recordingLocal{}, Locator: loc, Limits: lim})
	newService(t, Config{Host: h2, Local: local2, Locator: loc, Limits: lim})

	send := func(id, size, n int) (*Pending, error) {
		req := &wire.SendRequest{MessageID: msgID(id), Ciphertext: make([]byte, size)}
		for _, d := range recipients[:n] {
			req.Recipients = append(req.Recipients, d[:])
		}
		return s1.Dispatch(context.Background(), sender, req)
	}
	for name, c := range map[string]struct{ size, n int }{
		"ciphertext": {lim.MaxCiphertext + 1, 1},
		"recipients": {1, lim.MaxRecipients + 1},
	} {
		p, err := send(1, c.size, c.n)
		if p != nil || !errors.Is(err, wire.ErrTooLarge) {
			t.Fatalf("%s over the limit: dispatched %t, err %v, want too_large", name, p != nil, err)
		}
	}
	if got := local2.envelopes(); len(got) != 0 {
		t.Fatalf("a refused send delivered %d envelopes", len(got))
	}

	p, err := send(2, lim.MaxCiphertext, lim.MaxRecipients)
	if err != nil {
		t.Fatalf("send at the limits: %v", err)
	}
	for i, r := range p.Wait(context.Background()).Results {
		if r.Status != wire.StatusDelivered {
			t.Fatalf("recipient %d: %+v", i, r)
		}
	}
	if got := local2.envelopes(); len(got) != lim.MaxRecipients {
		t.Fatalf("delivered %d envelopes, want %d", len(got), lim.MaxRecipients)
	}
}

// TestInboundDeliverOverMaxCiphertextCutsStream: an envelope arriving from a peer over the receiving node's own
// MaxCiphertext is not pushed; the deliver stream is cut (counted as a peer protocol drop) and the sender sees
// the envelope fail as unreachable.
func TestInboundDeliverOverMaxCiphertextCutsStream(t *testing.T) {
	h1, h2 := newHost(t), newHost(t)
	sender, recipient := device(t), device(t)
	loc := mapLocator{recipient: {Gateway: h2.ID(), Addrs: h2.Addrs()}}
	local2 := &recordingLocal{devices: map[wire.DeviceID]bool{recipient: true}}
	s1 := newService(t, Config{Host: h1, Local: &recordingLocal{}, Locator: loc}) // default 64 KiB
	newService(t, Config{Host: h2, Local: local2, Locator: loc, Limits: Limits{MaxCiphertext: 100}})

	p, err := s1.Dispatch(context.Background(), sender, &wire.SendRequest{MessageID: msgID(1),
		Ciphertext: make([]byte, 101), Recipients: [][]byte{recipient[:]}})
	if err != nil {
		t.Fatal(err)
	}
	if r := p.Wait(context.Background()).Results[0]; r.Status != wire.StatusFailed || r.Reason != wire.FailUnreachable {
		t.Fatalf("result %+v, want failed unreachable", r)
	}
	if got := local2.envelopes(); len(got) != 0 {
		t.Fatalf("an envelope over MaxCiphertext was pushed: %d", len(got))
	}
}

// TestLinkIdleClosesQuietLinkAndNextSendReopens: an outbound deliver stream with nothing in flight is closed
// once it has been quiet for LinkIdle (not before), and a later send opens a new stream and is delivered.
func TestLinkIdleClosesQuietLinkAndNextSendReopens(t *testing.T) {
	h1, h2 := newHost(t), newHost(t)
	sender, recipient := device(t), device(t)
	loc := mapLocator{recipient: {Gateway: h2.ID(), Addrs: h2.Addrs()}}
	local2 := &recordingLocal{devices: map[wire.DeviceID]bool{recipient: true}}
	lim := Limits{LinkIdle: 300 * time.Millisecond}
	s1 := newService(t, Config{Host: h1, Local: &recordingLocal{}, Locator: loc, Limits: lim})
	newService(t, Config{Host: h2, Local: local2, Locator: loc, Limits: lim})

	send := func(i int) {
		t.Helper()
		p, err := s1.Dispatch(context.Background(), sender, &wire.SendRequest{MessageID: msgID(i),
			Ciphertext: []byte("x"), Recipients: [][]byte{recipient[:]}})
		if err != nil {
			t.Fatal(err)
		}
		if r := p.Wait(context.Background()).Results[0]; r.Status != wire.StatusDelivered {
			t.Fatalf("send %d: %+v", i, r)
		}
	}
	current := func() *link {
		s1.mu.Lock()
		sl := s1.slots[h2.ID()]
		s1.mu.Unlock()
		sl.mu.Lock()
		defer sl.mu.Unlock()
		return sl.l
	}
	deliverStreams := func() int { return streamsTo(h1, h2.ID(), s1.Protocol()) }

	send(1)
	first := current()
	sent := time.Now()
	if n := deliverStreams(); n != 1 {
		t.Fatalf("%d deliver streams open after a send, want 1", n)
	}
	select {
	case <-first.done:
	case <-time.After(10 * lim.LinkIdle):
		t.Fatalf("link still open %v after its last result (LinkIdle %v)", 10*lim.LinkIdle, lim.LinkIdle)
	}
	if quiet := time.Since(sent); quiet < lim.LinkIdle {
		t.Fatalf("link closed after %v, before LinkIdle %v", quiet, lim.LinkIdle)
	}
	if err := first.cause(); err == nil || !errors.Is(err, errLinkClosed) {
		t.Fatalf("idle link cause %v", err)
	}
	waitFor(t, func() bool { return deliverStreams() == 0 }, "the idle deliver stream to be gone")

	send(2)
	if second := current(); second == first {
		t.Fatal("a send after the idle close reused the dead link")
	}
	if n := deliverStreams(); n != 1 {
		t.Fatalf("%d deliver streams open after the second send, want 1", n)
	}
	if got := local2.envelopes(); len(got) != 2 {
		t.Fatalf("delivered %d envelopes, want 2", len(got))
	}
}

// hangingLocator is a Locator whose lookups hang until their context ends (or release, a backstop so that a
// missing timeout fails the test instead of hanging it); it records how long each lookup's deadline was.
type hangingLocator struct {
	release  <-chan struct{}
	deadline chan time.Duration
}

func (h hangingLocator) Locations(ctx context.Context, _ wire.DeviceID) ([]Location, error) {
	dl, ok := ctx.Deadline()
	if ok {
		h.deadline <- time.Until(dl)
	} else {
		h.deadline <- -1
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-h.release:
		return nil, errors.New("hanging locator: released")
	}
}

// TestLookupTimeoutCutsHangingPresenceLookup: a presence lookup that hangs is cut after LookupTimeout, and the
// recipient is treated as offline: its envelope is stored in the mailbox (docs/PROTOCOL.md §8).
func TestLookupTimeoutCutsHangingPresenceLookup(t *testing.T) {
	sender, recipient := device(t), device(t)
	release := make(chan struct{})
	loc := hangingLocator{release: release, deadline: make(chan time.Duration, 1)}
	mb := &memMailbox{}
	lim := Limits{LookupTimeout: 200 * time.Millisecond}
	s, err := New(Config{Host: newHost(t), Local: &recordingLocal{}, Locator: loc, Mailbox: mb, Limits: lim})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	backstop := time.AfterFunc(10*time.Second, func() { close(release) })
	defer backstop.Stop()

	start := time.Now()
	p, err := s.Dispatch(context.Background(), sender, &wire.SendRequest{MessageID: msgID(1),
		Ciphertext: []byte("ct"), Recipients: [][]byte{recipient[:]}})
	if err != nil {
		t.Fatal(err)
	}
	r := p.Wait(context.Background()).Results[0]
	took := time.Since(start)
	if d := <-loc.deadline; d < 0 || d > lim.LookupTimeout {
		t.Fatalf("lookup deadline %v, want at most LookupTimeout %v", d, lim.LookupTimeout)
	}
	if took < lim.LookupTimeout || took > 5*time.Second {
		t.Fatalf("send with a hanging lookup took %v, want about LookupTimeout %v", took, lim.LookupTimeout)
	}
	if r.Status != wire.StatusStored || len(mb.envelopes()) != 1 || mb.envelopes()[0].Recipient != recipient {
		t.Fatalf("result %+v, mailbox %d: want stored", r, len(mb.envelopes()))
	}
}

// TestWriteTimeoutCutsLinkToPeerThatStopsReading: when the peer at the other end of a deliver stream stops
// reading, a write blocked on the full stream is cut after WriteTimeout and the envelopes in flight fail as
// unreachable, long before the read deadline (AckTimeout+LinkIdle) would notice.
func TestWriteTimeoutCutsLinkToPeerThatStopsReading(t *testing.T) {
	h1, h2 := newHost(t), newHost(t)
	sender, recipient := device(t), device(t)
	loc := mapLocator{recipient: {Gateway: h2.ID(), Addrs: h2.Addrs()}}
	lim := Limits{WriteTimeout: 300 * time.Millisecond, AckTimeout: time.Minute, LinkIdle: time.Minute}
	s1 := newService(t, Config{Host: h1, Local: &recordingLocal{}, Locator: loc, Limits: lim})
	// h2 speaks the deliver protocol but never reads: the stream's flow-control window fills.
	var mu sync.Mutex
	var stuck []network.Stream
	h2.SetStreamHandler(s1.Protocol(), func(st network.Stream) {
		mu.Lock()
		defer mu.Unlock()
		stuck = append(stuck, st)
	})
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, st := range stuck {
			_ = st.Reset()
		}
	}()

	// Enough 64 KiB envelopes to overrun the muxer's receive window many times over.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	var pend []*Pending
	for i := range 128 {
		p, err := s1.Dispatch(ctx, sender, &wire.SendRequest{MessageID: msgID(i),
			Ciphertext: make([]byte, DefaultLimits().MaxCiphertext), Recipients: [][]byte{recipient[:]}})
		if err != nil {
			t.Fatal(err)
		}
		pend = append(pend, p)
	}
	for i, p := range pend {
		if r := p.Wait(ctx).Results[0]; r.Status != wire.StatusFailed || r.Reason != wire.FailUnreachable {
			t.Fatalf("envelope %d: %+v, want failed unreachable", i, r)
		}
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("a stuck deliver stream was cut after %v (WriteTimeout %v)", took, lim.WriteTimeout)
	}
}

// streamsTo counts h's open streams of protocol proto with peer p.
func streamsTo(h host.Host, p peer.ID, proto protocol.ID) int {
	n := 0
	for _, c := range h.Network().ConnsToPeer(p) {
		for _, st := range c.GetStreams() {
			if st.Protocol() == proto {
				n++
			}
		}
	}
	return n
}

// waitFor polls cond until it holds or 5 s pass.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dispatchUnreachable dispatches one envelope from sender to recipient on s, waits for its result (20 s at the
// most), and fails unless it is failed unreachable; it returns how long the result took.
func dispatchUnreachable(t *testing.T, s *Service, sender, recipient wire.DeviceID) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	p, err := s.Dispatch(ctx, sender, &wire.SendRequest{MessageID: msgID(1), Ciphertext: []byte("x"),
		Recipients: [][]byte{recipient[:]}})
	if err != nil {
		t.Fatal(err)
	}
	r := p.Wait(ctx).Results[0]
	took := time.Since(start)
	if r.Status != wire.StatusFailed || r.Reason != wire.FailUnreachable {
		t.Fatalf("result %+v after %v, want failed unreachable", r, took)
	}
	return took
}

// TestDialTimeoutBoundsOpeningDeliverStream: a gateway whose address accepts TCP connections but never completes
// the libp2p handshake is given up after DialTimeout, and the envelope fails as unreachable.
func TestDialTimeoutBoundsOpeningDeliverStream(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var mu sync.Mutex
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	defer func() {
		ln.Close()
		<-accepted
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	}()
	hole, err := ma.NewMultiaddr(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", ln.Addr().(*net.TCPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	sender, recipient := device(t), device(t)
	loc := mapLocator{recipient: {Gateway: newHost(t).ID(), Addrs: []ma.Multiaddr{hole}}}
	lim := Limits{DialTimeout: 300 * time.Millisecond}
	s, err := New(Config{Host: newHost(t), Local: &recordingLocal{}, Locator: loc, Limits: lim})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	took := dispatchUnreachable(t, s, sender, recipient)
	if took < lim.DialTimeout || took > 3*time.Second {
		t.Fatalf("dial to a silent address gave up after %v, want about DialTimeout %v", took, lim.DialTimeout)
	}
}

// TestDeliverStreamSilentForAckTimeoutPlusLinkIdleIsCut: a deliver stream whose other end goes silent is cut
// after AckTimeout+LinkIdle, both ways: the sender fails its envelopes in flight as unreachable when the peer
// reads them but never answers, and the receiver resets an inbound stream that sends nothing.
func TestDeliverStreamSilentForAckTimeoutPlusLinkIdleIsCut(t *testing.T) {
	lim := Limits{AckTimeout: 200 * time.Millisecond, LinkIdle: 300 * time.Millisecond}
	silence := lim.AckTimeout + lim.LinkIdle

	t.Run("outbound", func(t *testing.T) {
		h1, h2 := newHost(t), newHost(t)
		sender, recipient := device(t), device(t)
		loc := mapLocator{recipient: {Gateway: h2.ID(), Addrs: h2.Addrs()}}
		s1 := newService(t, Config{Host: h1, Local: &recordingLocal{}, Locator: loc, Limits: lim})
		// h2 reads every request and never answers, until the sender resets the stream.
		h2.SetStreamHandler(s1.Protocol(), func(st network.Stream) {
			_, _ = io.Copy(io.Discard, st)
			_ = st.Reset()
		})
		took := dispatchUnreachable(t, s1, sender, recipient)
		if took < silence || took > 5*time.Second {
			t.Fatalf("a peer that never answers was cut after %v, want about AckTimeout+LinkIdle %v", took, silence)
		}
	})

	t.Run("inbound", func(t *testing.T) {
		h1, h2 := newHost(t), newHost(t)
		s2 := newService(t, Config{Host: h2, Local: &recordingLocal{}, Locator: mapLocator{}, Limits: lim})
		h1.Peerstore().AddAddrs(h2.ID(), h2.Addrs(), time.Minute)
		st, err := h1.NewStream(context.Background(), h2.ID(), s2.Protocol())
		if err != nil {
			t.Fatal(err)
		}
		defer st.Reset()
		_ = st.SetReadDeadline(time.Now().Add(5 * time.Second))
		start := time.Now()
		_, err = st.Read(make([]byte, 1))
		took := time.Since(start)
		if err == nil || took >= 5*time.Second {
			t.Fatalf("silent inbound stream still open after %v (err %v), want cut after %v", took, err, silence)
		}
		if took < silence/2 {
			t.Fatalf("silent inbound stream cut after %v, before %v", took, silence)
		}
	})
}

// refusingLocal is a Local with nobody connected that answers every push at once with a failure carrying the
// longest reason the deliver protocol carries, so that each result frame is as large as one can be.
type refusingLocal struct{}

func (refusingLocal) Connected(wire.DeviceID) bool { return false }

func (refusingLocal) Push(wire.Envelope) <-chan Outcome {
	ch := make(chan Outcome, 1)
	ch <- refusingLocal{}.outcome()
	return ch
}

func (refusingLocal) PushNotify(_ wire.Envelope, done func(Outcome)) { done(refusingLocal{}.outcome()) }

func (refusingLocal) outcome() Outcome {
	return failed(wire.CodeInternal, strings.Repeat("x", maxReasonLen))
}

// TestWriteTimeoutCutsInboundStreamWhoseSenderStopsReading: on the receiving side of a deliver stream, when
// the sending node keeps sending requests but stops reading their results, the write of results blocked on the
// full stream is cut after WriteTimeout and the stream is reset, long before the read deadline
// (AckTimeout+LinkIdle) or the window would notice.
func TestWriteTimeoutCutsInboundStreamWhoseSenderStopsReading(t *testing.T) {
	h1, h2 := newHost(t), newHost(t)
	// A window far above the requests sent, so that only WriteTimeout can end the stream.
	const requests = 16 << 10
	lim := Limits{WriteTimeout: 200 * time.Millisecond, AckTimeout: time.Minute, LinkIdle: time.Minute,
		Window: 2 * requests}
	s2 := newService(t, Config{Host: h2, Local: refusingLocal{}, Locator: mapLocator{}, Limits: lim})
	deliverStreams := func() int { return streamsTo(h2, h1.ID(), s2.Protocol()) }

	// h1 plays a sending node that writes requests and never reads a result: 16 Ki results of 81 bytes are
	// five times the muxer's 256 KiB receive window, so h2's writer blocks on the full stream.
	h1.Peerstore().AddAddrs(h2.ID(), h2.Addrs(), time.Minute)
	st, err := h1.NewStream(context.Background(), h2.ID(), s2.Protocol())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Reset()
	sender, recipient := device(t), device(t)
	start := time.Now()
	w := bufio.NewWriter(st)
	for i := range requests {
		env := wire.Envelope{Sender: sender, Recipient: recipient, Ciphertext: []byte("x")}
		copy(env.MessageID[:], msgID(i))
		if err := writeDeliver(w, deliverReq{id: uint64(i + 1), env: env}); err != nil {
			break // h2 already cut the stream
		}
	}
	_ = w.Flush()

	// The stream's end is asynchronous to the writes above; poll for it with a deadline.
	waitFor(t, func() bool { return deliverStreams() == 0 }, "the receiving side to reset the stuck deliver stream")
	if took := time.Since(start); took < lim.WriteTimeout {
		t.Fatalf("stream cut after %v, before WriteTimeout %v", took, lim.WriteTimeout)
	}
	_ = st.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := st.Read(make([]byte, 1)); !errors.Is(err, network.ErrReset) {
		t.Fatalf("sending side's read after the cut: %v, want the stream reset", err)
	}
}
