package gateway

import (
	"testing"

	"github.com/iagon/gridchat/gateway/gatewaytest"
	"github.com/iagon/gridchat/wire"
)

// TestBatchedAckSettlesEverySendAndSingleFormStillWorks acknowledges a run of envelopes with one batched "ack"
// frame: every send is answered delivered. The single form keeps working on the same connection, and a
// batch mixed with the single form, an empty batch or a bad entry is refused without settling anything.
func TestBatchedAckSettlesEverySendAndSingleFormStillWorks(t *testing.T) {
	th := newTestHub(t, WSLimits{})
	a, b := th.dir.add(t), th.dir.add(t)
	ca, cb := th.login(t, a), th.login(t, b)
	const n = 50
	chans := make([]<-chan wire.Response, n)
	envs := make([]wire.EnvelopePush, n)
	for i := range n {
		var err error
		if chans[i], err = ca.StartSend(ctxT(t), mid(i), []byte{byte(i)}, b.ID()); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		e, err := cb.NextEnvelope(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		envs[i] = e
	}
	// Refused forms settle nothing.
	bad := []wire.Ack{
		{MessageID: envs[0].MessageID, SenderDevice: envs[0].SenderDevice,
			Acks: []wire.AckEntry{{MessageID: envs[1].MessageID, SenderDevice: envs[1].SenderDevice}}},
		{},
		{Acks: []wire.AckEntry{{MessageID: envs[0].MessageID, SenderDevice: envs[0].SenderDevice},
			{MessageID: []byte("short"), SenderDevice: envs[1].SenderDevice}}},
		{Acks: make([]wire.AckEntry, wire.MaxAcks+1)},
	}
	for i, ack := range bad {
		if _, err := cb.Call(ctxT(t), wire.OpAck, ack); err == nil {
			t.Fatalf("bad ack %d accepted", i)
		}
	}
	if got := metricValue(th.metrics.acks); got != 0 {
		t.Fatalf("refused acks counted: %v", got)
	}
	// The first envelope by the single form, the rest in one batch.
	if _, err := cb.Call(ctxT(t), wire.OpAck, wire.Ack{MessageID: envs[0].MessageID, SenderDevice: envs[0].SenderDevice}); err != nil {
		t.Fatal(err)
	}
	if err := cb.AckMany(ctxT(t), envs[1:]...); err != nil {
		t.Fatal(err)
	}
	for i, ch := range chans {
		r, err := gatewaytest.WaitSend(ctxT(t), ch)
		if err != nil || r.Results[0].Status != wire.StatusDelivered {
			t.Fatalf("send %d: %+v %v", i, r, err)
		}
	}
	if got := metricValue(th.metrics.acks); got != n {
		t.Fatalf("acks counted %v, want %d", got, n)
	}
}
