package relay

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/iagon/gridchat/wire"
)

// listLocator answers presence lookups with a fixed list of gateways per device.
type listLocator map[wire.DeviceID][]Location

func (m listLocator) Locations(_ context.Context, d wire.DeviceID) ([]Location, error) {
	if locs, ok := m[d]; ok {
		return locs, nil
	}
	return nil, ErrNotOnline
}

// counterValue reads a counter.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func at(h host.Host) Location { return Location{Gateway: h.ID(), Addrs: h.Addrs()} }

// startRelay starts a delivery service on h with local and the locator, closed at the test's end.
func startRelay(t *testing.T, h host.Host, local Local, loc Locator, mb Mailbox) *Service {
	t.Helper()
	cfg := Config{Host: h, Local: local, Locator: loc, Limits: Limits{DialTimeout: time.Second}}
	if mb != nil {
		cfg.Mailbox = mb
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func sendOne(t *testing.T, s *Service, sender, recipient wire.DeviceID, i int) wire.RecipientResult {
	t.Helper()
	p, err := s.Dispatch(context.Background(), sender, &wire.SendRequest{MessageID: msgID(i),
		Ciphertext: []byte("ct"), Recipients: [][]byte{recipient[:]}})
	if err != nil {
		t.Fatal(err)
	}
	return p.Wait(context.Background()).Results[0]
}

// TestDeliveryTriesTheDevicesNextGateway: a device whose newest gateway says it is not connected there, ends its
// connection before acknowledging, or cannot be reached, is reached live on its next gateway; the sender gets
// "delivered" and the retry is counted by reason.
func TestDeliveryTriesTheDevicesNextGateway(t *testing.T) {
	for _, tc := range []struct {
		name   string
		first  func(t *testing.T, recipient wire.DeviceID) host.Host
		reason string
	}{
		{"offline", func(t *testing.T, _ wire.DeviceID) host.Host {
			h := newHost(t)
			startRelay(t, h, &recordingLocal{}, listLocator{}, nil)
			return h
		}, "offline"},
		{"gone", func(t *testing.T, recipient wire.DeviceID) host.Host {
			h := newHost(t)
			startRelay(t, h, failingLocal{device: recipient, out: failed(wire.CodeUnavailable, wire.FailGone)},
				listLocator{}, nil)
			return h
		}, wire.FailGone},
		{"unreachable", func(t *testing.T, _ wire.DeviceID) host.Host {
			h := newHost(t)
			h.Close()
			return h
		}, wire.FailUnreachable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sender, recipient := device(t), device(t)
			h1, h3 := newHost(t), newHost(t)
			h2 := tc.first(t, recipient)
			local3 := &recordingLocal{devices: map[wire.DeviceID]bool{recipient: true}}
			startRelay(t, h3, local3, listLocator{}, nil)
			mb := &memMailbox{}
			s := startRelay(t, h1, &recordingLocal{}, listLocator{recipient: {at(h2), at(h3)}}, mb)
			if r := sendOne(t, s, sender, recipient, 1); r.Status != wire.StatusDelivered {
				t.Fatalf("result %+v, want delivered on the second gateway", r)
			}
			if got := local3.envelopes(); len(got) != 1 || got[0].Recipient != recipient {
				t.Fatalf("second gateway pushed %+v", got)
			}
			if n := counterValue(t, s.metrics.retried.WithLabelValues(tc.reason)); n != 1 {
				t.Fatalf("retries counted %v for %s", n, tc.reason)
			}
			if len(mb.envelopes()) != 0 {
				t.Fatal("an envelope delivered through a current gateway was copied to the mailbox")
			}
		})
	}
}

// TestDeliveryDoesNotRetryAfterAckTimeout: a push that was not acknowledged in time may have reached the device,
// so it is not pushed on another gateway: it goes to the mailbox, as with one gateway. When every gateway
// fails, the last failure decides, and the envelope is stored.
func TestDeliveryDoesNotRetryAfterAckTimeout(t *testing.T) {
	sender, recipient := device(t), device(t)
	h1, h2, h3 := newHost(t), newHost(t), newHost(t)
	startRelay(t, h2, failingLocal{device: recipient, out: failed(wire.CodeUnavailable, wire.FailAckTimeout)},
		listLocator{}, nil)
	local3 := &recordingLocal{devices: map[wire.DeviceID]bool{recipient: true}}
	startRelay(t, h3, local3, listLocator{}, nil)
	mb := &memMailbox{}
	s := startRelay(t, h1, &recordingLocal{}, listLocator{recipient: {at(h2), at(h3)}}, mb)
	if r := sendOne(t, s, sender, recipient, 1); r.Status != wire.StatusStored || len(local3.envelopes()) != 0 {
		t.Fatalf("result %+v, second gateway pushed %d", r, len(local3.envelopes()))
	}

	h4 := newHost(t)
	startRelay(t, h4, &recordingLocal{}, listLocator{}, nil)
	s = startRelay(t, newHost(t), &recordingLocal{}, listLocator{recipient: {at(h4), at(h4)}}, mb)
	if r := sendOne(t, s, sender, recipient, 2); r.Status != wire.StatusStored || len(mb.envelopes()) != 2 {
		t.Fatalf("result %+v, mailbox %d, want stored", r, len(mb.envelopes()))
	}
}

// TestDeliveryThroughSupersededGatewayKeepsMailboxCopy: a gateway that only an older record of the device names
// (it may have withheld the device's offline record) is still tried, and its "delivered" reaches the sender,
// but the envelope is also stored in the mailbox, so a node that acknowledges and drops envelopes for a device
// that left it cannot lose them.
func TestDeliveryThroughSupersededGatewayKeepsMailboxCopy(t *testing.T) {
	sender, recipient := device(t), device(t)
	h1, h2 := newHost(t), newHost(t)
	// h2 acknowledges everything and keeps nothing, as a node that withheld the device's offline record could.
	startRelay(t, h2, failingLocal{device: recipient, out: Outcome{Status: wire.StatusDelivered}}, listLocator{}, nil)
	mb := &memMailbox{}
	stale := at(h2)
	stale.Superseded = true
	s := startRelay(t, h1, &recordingLocal{}, listLocator{recipient: {stale}}, mb)
	if r := sendOne(t, s, sender, recipient, 1); r.Status != wire.StatusDelivered || len(r.Receipts) != 0 {
		t.Fatalf("result %+v, want delivered", r)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(mb.envelopes()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no mailbox copy")
		}
		time.Sleep(10 * time.Millisecond) // the copy is stored after the answer, polled with a deadline
	}
	if got := mb.envelopes(); len(got) != 1 || got[0].Recipient != recipient || got[0].Sender != sender {
		t.Fatalf("mailbox holds %+v", got)
	}
	if n := counterValue(t, s.metrics.copies.WithLabelValues("stored")); n != 1 {
		t.Fatalf("copies counted %v", n)
	}
}

// TestLocalDeviceGoneTriesItsOtherGateway: a device connected to the sender's own node whose connection there
// ends before it acknowledges is looked up and reached on its other gateway (this node is not tried again).
func TestLocalDeviceGoneTriesItsOtherGateway(t *testing.T) {
	for _, out := range []Outcome{failed(wire.CodeUnavailable, wire.FailGone), {Status: wire.StatusOffline}} {
		t.Run(retryReason(out), func(t *testing.T) {
			sender, recipient := device(t), device(t)
			h1, h3 := newHost(t), newHost(t)
			local3 := &recordingLocal{devices: map[wire.DeviceID]bool{recipient: true}}
			startRelay(t, h3, local3, listLocator{}, nil)
			mb := &memMailbox{}
			s := startRelay(t, h1, failingLocal{device: recipient, out: out},
				listLocator{recipient: {at(h1), at(h3)}}, mb)
			if r := sendOne(t, s, sender, recipient, 1); r.Status != wire.StatusDelivered {
				t.Fatalf("result %+v, want delivered on the other gateway", r)
			}
			if len(local3.envelopes()) != 1 || len(mb.envelopes()) != 0 {
				t.Fatalf("other gateway pushed %d, mailbox %d", len(local3.envelopes()), len(mb.envelopes()))
			}
			if n := counterValue(t, s.metrics.retried.WithLabelValues(retryReason(out))); n != 1 {
				t.Fatalf("retries counted %v", n)
			}
		})
	}
}
