package node_test

import (
	"testing"
	"time"

	"github.com/iagon/gridchat/gateway"
	"github.com/iagon/gridchat/gateway/gatewaytest"
	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/node"
)

// TestJoinerWithOpenRendezvousOutlivesHandshakeTimeout: with a 1 s handshake timeout, a new device that joined
// an open link rendezvous stays connected without authenticating after a connection opened later without one
// was cut at its timeout, and still exchanges link frames with the host; once the rendezvous ends, the joiner is
// cut at the handshake timeout.
func TestJoinerWithOpenRendezvousOutlivesHandshakeTimeout(t *testing.T) {
	nd := gridtest.Swarm(t, 1, gridtest.Configure(func(_ int, cfg *node.Config) {
		cfg.Delivery.WS.HandshakeTimeout = time.Second
	}))[0]
	host := connect(t, nd, registerAccount(t, nd).devs[0], gatewaytest.Options{})
	ctx := deliveryCtx(t)
	rv := []byte("handshake-rendezvous")
	joiner := pairRendezvous(t, ctx, nd, host, rv)
	idle := dialJoiner(t, nd) // opened after the joiner: its deadline is the later one
	if code := idle.CloseStatus(ctx); code != gateway.CloseHandshakeTimeout {
		t.Fatalf("connection without a rendezvous closed with %d, want %d", code, gateway.CloseHandshakeTimeout)
	}
	if err := linkSend(ctx, joiner, rv, []byte("from the joiner")); err != nil {
		t.Fatalf("joiner after the handshake timeout: %v", err)
	}
	if got := nextFrame(t, host, rv); string(got) != "from the joiner" {
		t.Fatalf("host got %q", got)
	}
	if err := linkSend(ctx, host, rv, []byte("from the host")); err != nil {
		t.Fatal(err)
	}
	if got := nextFrame(t, joiner, rv); string(got) != "from the host" {
		t.Fatalf("joiner got %q", got)
	}
	// The rendezvous ends (the host leaves): the joiner, still without auth, is cut at the handshake timeout.
	host.Close()
	if code := joiner.CloseStatus(ctx); code != gateway.CloseHandshakeTimeout {
		t.Fatalf("joiner after its rendezvous ended closed with %d, want %d", code, gateway.CloseHandshakeTimeout)
	}
}
