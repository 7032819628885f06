package gateway

import (
	"context"
	"testing"

	"github.com/iagon/gridchat/gateway/gatewaytest"
	"github.com/iagon/gridchat/wire"
)

// BenchmarkLocalSend measures one gateway alone: 1 KiB sends from one client to another on the same node,
// pipelined 256 deep, each acknowledged by the recipient.
func BenchmarkLocalSend(b *testing.B) {
	th := newTestHub(b, WSLimits{RequestsPerSecond: 1e9, RequestBurst: 1e9, AccountRequestsPerSecond: 1e9, AccountRequestBurst: 1e9})
	a, r := th.dir.add(b), th.dir.add(b)
	ca, cr := th.login(b, a), th.login(b, r)
	ctx := context.Background()
	go func() {
		for {
			e, err := cr.NextEnvelope(ctx)
			if err != nil {
				return
			}
			_ = cr.Ack(ctx, e)
		}
	}()
	payload := make([]byte, 1024)
	var pend []<-chan wire.Response
	i := 0
	b.SetBytes(1024)
	for b.Loop() {
		i++
		ch, err := ca.StartSend(ctx, mid(i), payload, r.ID())
		if err != nil {
			b.Fatal(err)
		}
		pend = append(pend, ch)
		if len(pend) == 256 {
			if res, err := gatewaytest.WaitSend(ctx, pend[0]); err != nil || res.Results[0].Status != wire.StatusDelivered {
				b.Fatalf("%+v %v", res, err)
			}
			pend = pend[1:]
		}
	}
	for _, ch := range pend {
		_, _ = gatewaytest.WaitSend(ctx, ch)
	}
}
