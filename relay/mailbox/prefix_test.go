package mailbox_test

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/iagon/gridchat/relay/mailbox"
)

func TestProtocolPrefixDerivesTheMailboxProtocol(t *testing.T) {
	for prefix, want := range map[protocol.ID]protocol.ID{
		"":            "/gridchat/mailbox/1.0.0",
		"/gridchat":   "/gridchat/mailbox/1.0.0",
		"/mygrid":     "/mygrid/mailbox/1.0.0",
		"/org/grid-2": "/org/grid-2/mailbox/1.0.0",
	} {
		if got := mailbox.ProtocolIDFor(prefix); got != want {
			t.Errorf("ProtocolIDFor(%q) = %q, want %q", prefix, got, want)
		}
	}
	if mailbox.ProtocolID != "/gridchat/mailbox/1.0.0" {
		t.Fatalf("default name changed: %q", mailbox.ProtocolID)
	}
}
