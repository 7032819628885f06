package relay

import (
	"context"
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/iagon/gridchat/wire"
)

func TestProtocolPrefixDerivesDeliverProtocolAndPresenceTopic(t *testing.T) {
	for _, c := range []struct {
		prefix         protocol.ID
		deliver, topic string
	}{
		{"", "/gridchat/deliver/1.0.0", "/gridchat/presence/1"},
		{"/gridchat", "/gridchat/deliver/1.0.0", "/gridchat/presence/1"},
		{"/mygrid", "/mygrid/deliver/1.0.0", "/mygrid/presence/1"},
		{"/org/grid-2", "/org/grid-2/deliver/1.0.0", "/org/grid-2/presence/1"},
	} {
		if got := DeliverProtocolFor(c.prefix); string(got) != c.deliver {
			t.Errorf("DeliverProtocolFor(%q) = %q, want %q", c.prefix, got, c.deliver)
		}
		if got := PresenceTopicFor(c.prefix); got != c.topic {
			t.Errorf("PresenceTopicFor(%q) = %q, want %q", c.prefix, got, c.topic)
		}
	}
	if DeliverProtocol != "/gridchat/deliver/1.0.0" || PresenceTopic != "/gridchat/presence/1" {
		t.Fatalf("default names changed: %q, %q", DeliverProtocol, PresenceTopic)
	}
}

func TestServicesWithDifferentPrefixesDoNotDeliverToEachOther(t *testing.T) {
	h1, h2, h3 := newHost(t), newHost(t), newHost(t)
	sender, recipient := device(t), device(t)
	online := func() *recordingLocal { return &recordingLocal{devices: map[wire.DeviceID]bool{recipient: true}} }
	start := func(cfg Config) *Service {
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	// Every gateway is told the recipient is on h2; h2 serves grid "/x", as h1 does, and h3 belongs to grid "/y".
	loc := mapLocator{recipient: {Gateway: h2.ID(), Addrs: h2.Addrs()}}
	x1 := start(Config{Host: h1, ProtocolPrefix: "/x", Local: &recordingLocal{}, Locator: loc})
	local2 := online()
	start(Config{Host: h2, ProtocolPrefix: "/x", Local: local2, Locator: loc})
	y3 := start(Config{Host: h3, ProtocolPrefix: "/y", Local: &recordingLocal{}, Locator: loc})

	if x1.Protocol() != "/x/deliver/1.0.0" || y3.Protocol() != "/y/deliver/1.0.0" {
		t.Fatalf("protocols %q, %q", x1.Protocol(), y3.Protocol())
	}
	served := h2.Mux().Protocols()
	if !slices.Contains(served, "/x/deliver/1.0.0") || slices.Contains(served, DeliverProtocol) {
		t.Fatalf("h2 serves %v: want /x/deliver/1.0.0 and not the default", served)
	}

	send := func(s *Service, i int) wire.RecipientResult {
		p, err := s.Dispatch(context.Background(), sender, &wire.SendRequest{MessageID: msgID(i),
			Ciphertext: []byte("x"), Recipients: [][]byte{recipient[:]}})
		if err != nil {
			t.Fatal(err)
		}
		return p.Wait(context.Background()).Results[0]
	}
	if r := send(y3, 1); r.Status != wire.StatusFailed || r.Reason != wire.FailUnreachable {
		t.Fatalf("grid /y to a gateway of grid /x: %+v, want failed unreachable", r)
	}
	if n := len(local2.envelopes()); n != 0 {
		t.Fatalf("grid /y's send reached grid /x's device: %d envelopes", n)
	}
	if r := send(x1, 2); r.Status != wire.StatusDelivered {
		t.Fatalf("within grid /x: %+v, want delivered", r)
	}
}
