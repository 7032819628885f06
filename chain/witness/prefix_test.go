package witness

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/protocol"
)

func TestProtocolPrefixDerivesTheWitnessProtocolAndCheckpointTopic(t *testing.T) {
	for _, c := range []struct {
		prefix protocol.ID
		proto  protocol.ID
		topic  string
	}{
		{"", "/gridchat/witness/1.0.0", "/gridchat/checkpoints/1"},
		{"/gridchat", "/gridchat/witness/1.0.0", "/gridchat/checkpoints/1"},
		{"/mygrid", "/mygrid/witness/1.0.0", "/mygrid/checkpoints/1"},
		{"/org/grid-2", "/org/grid-2/witness/1.0.0", "/org/grid-2/checkpoints/1"},
	} {
		if got := ProtocolIDFor(c.prefix); got != c.proto {
			t.Errorf("ProtocolIDFor(%q) = %q, want %q", c.prefix, got, c.proto)
		}
		if got := TopicFor(c.prefix); got != c.topic {
			t.Errorf("TopicFor(%q) = %q, want %q", c.prefix, got, c.topic)
		}
	}
	if ProtocolID != "/gridchat/witness/1.0.0" || Topic != "/gridchat/checkpoints/1" {
		t.Fatalf("default names changed: %q, %q", ProtocolID, Topic)
	}
}
