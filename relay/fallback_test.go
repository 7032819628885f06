package relay

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/iagon/gridchat/wire"
)

// failingLocal is a Local whose devices are connected but whose pushes all end with one outcome, as a gateway
// reports a device that disconnected mid-push or never acknowledged.
type failingLocal struct {
	device wire.DeviceID
	out    Outcome
}

func (l failingLocal) Connected(d wire.DeviceID) bool { return d == l.device }

func (l failingLocal) Push(wire.Envelope) <-chan Outcome {
	ch := make(chan Outcome, 1)
	ch <- l.out
	return ch
}

// memMailbox is a Mailbox that keeps what it is given and returns one receipt per put, or refuses with err.
type memMailbox struct {
	mu  sync.Mutex
	got []wire.Envelope
	err error
}

func (m *memMailbox) Put(_ context.Context, env wire.Envelope) ([][]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, fmt.Errorf("mem mailbox: %w", m.err)
	}
	m.got = append(m.got, env)
	return [][]byte{[]byte("receipt-" + string(env.MessageID[:]))}, nil
}

func (m *memMailbox) envelopes() []wire.Envelope {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]wire.Envelope(nil), m.got...)
}

// TestLiveFailureAfterPresenceFallsBackToMailbox: a device found online whose push ends "gone" or "ack_timeout"
// has its envelope stored in its mailbox, and the sender gets "stored" with the mailbox's receipts.
func TestLiveFailureAfterPresenceFallsBackToMailbox(t *testing.T) {
	for _, reason := range []string{wire.FailGone, wire.FailAckTimeout} {
		t.Run(reason, func(t *testing.T) {
			sender, recipient := device(t), device(t)
			mb := &memMailbox{}
			s, err := New(Config{Host: newHost(t), Local: failingLocal{device: recipient,
				out: failed(wire.CodeUnavailable, reason)}, Locator: mapLocator{}, Mailbox: mb})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			p, err := s.Dispatch(context.Background(), sender, &wire.SendRequest{MessageID: msgID(1),
				Ciphertext: []byte("ct"), Recipients: [][]byte{recipient[:]}})
			if err != nil {
				t.Fatal(err)
			}
			r := p.Wait(context.Background()).Results[0]
			if r.Status != wire.StatusStored || len(r.Receipts) != 1 {
				t.Fatalf("result %+v, want stored with the mailbox's receipt", r)
			}
			got := mb.envelopes()
			if len(got) != 1 || got[0].Recipient != recipient || got[0].Sender != sender ||
				string(got[0].Ciphertext) != "ct" {
				t.Fatalf("mailbox holds %+v", got)
			}
		})
	}
}

// TestUnreachableGatewayFallsBackToMailbox: a device whose presence names a gateway that cannot be reached has
// its envelope stored; a mailbox refusal reaches the sender as that refusal, not as "unreachable".
func TestUnreachableGatewayFallsBackToMailbox(t *testing.T) {
	h1, h2 := newHost(t), newHost(t)
	sender, recipient := device(t), device(t)
	loc := mapLocator{recipient: {Gateway: h2.ID(), Addrs: h2.Addrs()}}
	mb := &memMailbox{}
	s, err := New(Config{Host: h1, Local: &recordingLocal{}, Locator: loc, Mailbox: mb,
		Limits: Limits{DialTimeout: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h2.Close()
	send := func(i int) wire.RecipientResult {
		p, err := s.Dispatch(context.Background(), sender, &wire.SendRequest{MessageID: msgID(i),
			Ciphertext: []byte("x"), Recipients: [][]byte{recipient[:]}})
		if err != nil {
			t.Fatal(err)
		}
		return p.Wait(context.Background()).Results[0]
	}
	if r := send(1); r.Status != wire.StatusStored || len(mb.envelopes()) != 1 {
		t.Fatalf("result %+v, mailbox %d, want stored", r, len(mb.envelopes()))
	}
	mb.mu.Lock()
	mb.err = ErrMailboxFull
	mb.mu.Unlock()
	if r := send(2); r.Status != wire.StatusFailed || r.Reason != wire.FailMailboxFull {
		t.Fatalf("result %+v, want the mailbox's refusal", r)
	}
}

// TestOtherLiveFailuresStayFailed: "busy" is the gateway's overload answer, not a sign that the device missed the
// envelope; it is reported as is and nothing is stored.
func TestOtherLiveFailuresStayFailed(t *testing.T) {
	sender, recipient := device(t), device(t)
	mb := &memMailbox{}
	s, err := New(Config{Host: newHost(t), Local: failingLocal{device: recipient,
		out: failed(wire.CodeBusy, wire.FailBusy)}, Locator: mapLocator{}, Mailbox: mb})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p, err := s.Dispatch(context.Background(), sender, &wire.SendRequest{MessageID: msgID(1),
		Ciphertext: []byte("ct"), Recipients: [][]byte{recipient[:]}})
	if err != nil {
		t.Fatal(err)
	}
	if r := p.Wait(context.Background()).Results[0]; r.Status != wire.StatusFailed || r.Reason != wire.FailBusy ||
		len(mb.envelopes()) != 0 {
		t.Fatalf("result %+v, mailbox %d", r, len(mb.envelopes()))
	}
}
