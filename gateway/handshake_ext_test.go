package gateway

import (
	"context"
	"testing"
	"time"

	"github.com/iagon/gridchat/gateway/gatewaytest"
)

// TestExtendHandshakeKeepsUnauthenticatedConnection: a pre-auth operation that extends its connection's
// handshake deadline keeps that connection open past the handshake timeout, while one opened later without it is
// cut with CloseHandshakeTimeout; once the extension ends, the held connection is cut at the handshake timeout.
func TestExtendHandshakeKeepsUnauthenticatedConnection(t *testing.T) {
	th := newTestHub(t, WSLimits{HandshakeTimeout: 300 * time.Millisecond})
	if err := th.Handle("test.hold", func(_ context.Context, c *Call) (any, error) {
		if !c.ExtendHandshake(time.Minute) {
			t.Error("ExtendHandshake refused on a live unauthenticated connection")
		}
		return nil, nil
	}, AllowUnauthenticated()); err != nil {
		t.Fatal(err)
	}
	held := th.dial(t, gatewaytest.Options{})
	if _, err := held.Call(ctxT(t), "test.hold", struct{}{}); err != nil {
		t.Fatal(err)
	}
	cut := th.dial(t, gatewaytest.Options{})
	if code := cut.CloseStatus(ctxT(t)); code != CloseHandshakeTimeout {
		t.Fatalf("connection without an extension closed with %d", code)
	}
	if _, err := held.Call(ctxT(t), "test.hold", struct{}{}); err != nil {
		t.Fatalf("held connection after the handshake timeout: %v", err)
	}
	if err := th.Handle("test.release", func(_ context.Context, c *Call) (any, error) {
		c.Pusher().EndHandshakeExtension()
		return nil, nil
	}, AllowUnauthenticated()); err != nil {
		t.Fatal(err)
	}
	if _, err := held.Call(ctxT(t), "test.release", struct{}{}); err != nil {
		t.Fatal(err)
	}
	if code := held.CloseStatus(ctxT(t)); code != CloseHandshakeTimeout {
		t.Fatalf("connection whose extension ended closed with %d", code)
	}
	var none Call
	if none.ExtendHandshake(time.Minute) {
		t.Fatal("ExtendHandshake on a call without a connection reported success")
	}
}
