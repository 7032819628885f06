package gateway

import (
	"testing"
	"time"

	"github.com/iagon/gridchat/gateway/gatewaytest"
	"github.com/iagon/gridchat/wire"
)

// TestRepeatOfFailedPushIsPushedAgain: an envelope whose first push timed out unacknowledged is pushed again
// when it comes back (as the mailbox redelivers it), and that second push can be acknowledged; a repeat of a
// delivered envelope is still not pushed.
func TestRepeatOfFailedPushIsPushedAgain(t *testing.T) {
	th := newTestHub(t, WSLimits{AckTimeout: 200 * time.Millisecond})
	a, b := th.dir.add(t), th.dir.add(t)
	ca, cb := th.login(t, a), th.login(t, b)
	ch, _ := ca.StartSend(ctxT(t), mid(1), []byte("x"), b.ID())
	if _, err := cb.NextEnvelope(ctxT(t)); err != nil { // read but never acknowledged
		t.Fatal(err)
	}
	if r, err := gatewaytest.WaitSend(ctxT(t), ch); err != nil || r.Results[0].Reason != wire.FailAckTimeout {
		t.Fatalf("%+v %v", r, err)
	}
	ch, _ = ca.StartSend(ctxT(t), mid(1), []byte("x"), b.ID())
	if e := receiveAndAck(t, cb); string(e.Ciphertext) != "x" {
		t.Fatalf("repeat pushed as %q", e.Ciphertext)
	}
	if r, err := gatewaytest.WaitSend(ctxT(t), ch); err != nil || r.Results[0].Status != wire.StatusDelivered {
		t.Fatalf("repeat of a failed push: %+v %v", r, err)
	}
	ch, _ = ca.StartSend(ctxT(t), mid(1), []byte("x"), b.ID())
	if r, err := gatewaytest.WaitSend(ctxT(t), ch); err != nil || r.Results[0].Status != wire.StatusDelivered {
		t.Fatalf("repeat of a delivered push: %+v %v", r, err)
	}
	expectOnlyMarker(t, ca, cb, b.ID())
}
