package node_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/gateway"
	"github.com/iagon/gridchat/gateway/gatewaytest"
	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/keyregistry"
	"github.com/iagon/gridchat/node"
	"github.com/iagon/gridchat/wire"
)

func deliveryCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// account is a registered account and its devices.
type account struct {
	chain *e2ee.Chain
	devs  []*e2ee.DeviceKeys
}

// registerAccount registers a new account with one device through nd's key directory.
func registerAccount(t testing.TB, nd *node.Node) *account {
	t.Helper()
	now := time.Now()
	dev, err := e2ee.NewDeviceKeys(now)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := e2ee.NewAccount(dev, now)
	if err != nil {
		t.Fatal(err)
	}
	conn := "test-" + dev.ID().String()
	grant, err := nd.Directory().Nonce(conn, dev.Public().Encode())
	if err != nil {
		t.Fatal(err)
	}
	gw := []byte(nd.ID())
	proof, err := e2ee.SignRegistration(dev, gw, grant.Nonce[:], now)
	if err != nil {
		t.Fatal(err)
	}
	ans, err := dev.AnswerKeyChallenge(gw, grant.Nonce[:], grant.Challenge)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nd.Directory().Register(deliveryCtx(t), conn, keyregistry.RegisterRequest{
		Nonce: grant.Nonce, Chain: chain.Encode(), Proof: proof.Encode(), Answer: ans}); err != nil {
		t.Fatalf("register: %v", err)
	}
	return &account{chain: chain, devs: []*e2ee.DeviceKeys{dev}}
}

// linkDevice adds a device to the account through nd's key directory.
func (a *account) linkDevice(t testing.TB, nd *node.Node) *e2ee.DeviceKeys {
	t.Helper()
	now := time.Now()
	dev, err := e2ee.NewDeviceKeys(now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.chain.Append(a.devs[0], &e2ee.AddDevice{Cert: e2ee.NewDeviceCert(dev, a.chain.AccountID(), now)}, now); err != nil {
		t.Fatal(err)
	}
	if _, err := nd.Directory().Append(deliveryCtx(t), a.chain.Encode()); err != nil {
		t.Fatalf("link device: %v", err)
	}
	a.devs = append(a.devs, dev)
	return dev
}

// connect opens a WebSocket to nd and authenticates as dev, retrying while nd's directory has not yet learnt
// the device from the grid.
func connect(t testing.TB, nd *node.Node, dev *e2ee.DeviceKeys, opts gatewaytest.Options) *gatewaytest.Client {
	t.Helper()
	ctx := deliveryCtx(t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := gatewaytest.Dial(ctx, nd.WSURL(), opts)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Auth(ctx, dev)
		if err == nil {
			t.Cleanup(c.Close)
			return c
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("auth on %s: %v", nd.ID(), err)
		}
		time.Sleep(50 * time.Millisecond) // polling the directory's replication, with a deadline
	}
}

// waitLocated polls until from's presence service places dev on the gateway at.
func waitLocated(t testing.TB, from, at *node.Node, dev *e2ee.DeviceKeys) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		loc, err := from.Presence().Locate(deliveryCtx(t), wire.DeviceID(dev.ID()))
		if err == nil && loc.Gateway == at.ID() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never located device on %s: %+v %v", from.ID(), at.ID(), loc, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func msgID(i int) []byte {
	b := make([]byte, 16)
	copy(b, "gridchat")
	binary.BigEndian.PutUint64(b[8:], uint64(i))
	return b
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEnvelopeReachesDevicesOnThreeNodesOnceInOrder(t *testing.T) {
	nodes := gridtest.Swarm(t, 3, gridtest.InMemory())
	alice := registerAccount(t, nodes[0])
	a1 := alice.devs[0]
	a2 := alice.linkDevice(t, nodes[0])
	bob := registerAccount(t, nodes[1])
	b1 := bob.devs[0]
	b2 := bob.linkDevice(t, nodes[1])

	ca1 := connect(t, nodes[0], a1, gatewaytest.Options{})
	ca2 := connect(t, nodes[0], a2, gatewaytest.Options{})
	cb1 := connect(t, nodes[1], b1, gatewaytest.Options{})
	cb2 := connect(t, nodes[2], b2, gatewaytest.Options{})
	waitLocated(t, nodes[0], nodes[1], b1)
	waitLocated(t, nodes[0], nodes[2], b2)

	const n = 100
	ctx := deliveryCtx(t)
	cts := make([][]byte, n)
	var pending []<-chan wire.Response
	for i := range n {
		cts[i] = randomBytes(t, 1+i*37%2048)
		ch, err := ca1.StartSend(ctx, msgID(i), cts[i], b1.ID(), b2.ID(), a2.ID())
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, ch)
	}
	for name, c := range map[string]*gatewaytest.Client{"B1": cb1, "B2": cb2, "A2": ca2} {
		for i := range n {
			e, err := c.NextEnvelope(ctx)
			if err != nil {
				t.Fatalf("%s envelope %d: %v", name, i, err)
			}
			aid := a1.ID()
			if !bytes.Equal(e.MessageID, msgID(i)) || !bytes.Equal(e.Ciphertext, cts[i]) || !bytes.Equal(e.SenderDevice, aid[:]) {
				t.Fatalf("%s envelope %d: message %x, %d bytes: out of order or altered", name, i, e.MessageID, len(e.Ciphertext))
			}
			if err := c.Ack(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, ch := range pending {
		r, err := gatewaytest.WaitSend(ctx, ch)
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		for j, res := range r.Results {
			if res.Status != wire.StatusDelivered {
				t.Fatalf("send %d recipient %d: %+v", i, j, res)
			}
		}
	}
	// Exactly once: a resend of the same message IDs is not pushed again, and nothing else arrives.
	r, err := ca1.Send(ctx, msgID(0), cts[0], b1.ID(), b2.ID(), a2.ID())
	if err != nil {
		t.Fatal(err)
	}
	for _, res := range r.Results {
		if res.Status != wire.StatusDelivered {
			t.Fatalf("duplicate: %+v", res)
		}
	}
	for name, c := range map[string]*gatewaytest.Client{"B1": cb1, "B2": cb2, "A2": ca2} {
		qctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		e, err := c.NextEnvelope(qctx)
		cancel()
		if err == nil {
			t.Fatalf("%s got an extra envelope %x", name, e.MessageID)
		}
	}
	// The sender's own first device is not a recipient and got nothing.
	qctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if e, err := ca1.NextEnvelope(qctx); err == nil {
		t.Fatalf("sender got %x", e.MessageID)
	}
}

func TestDeviceGoingOfflineIsReportedOffline(t *testing.T) {
	nodes := gridtest.Swarm(t, 2, gridtest.InMemory())
	alice, bob := registerAccount(t, nodes[0]), registerAccount(t, nodes[1])
	ca := connect(t, nodes[0], alice.devs[0], gatewaytest.Options{})
	cb := connect(t, nodes[1], bob.devs[0], gatewaytest.Options{})
	waitLocated(t, nodes[0], nodes[1], bob.devs[0])
	cb.Close()
	// The gateway publishes the device's pre-signed offline record; node 0 learns it by gossip.
	t.Logf("node 0 received %v presence records by gossip", gauge(t, nodes[0], "gridchat_presence_received_total"))
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := nodes[0].Presence().Locate(deliveryCtx(t), wire.DeviceID(bob.devs[0].ID()))
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("offline record never arrived")
		}
		time.Sleep(20 * time.Millisecond)
	}
	r, err := ca.Send(deliveryCtx(t), msgID(1), []byte("hello"), bob.devs[0].ID())
	if err != nil {
		t.Fatal(err)
	}
	if st := r.Results[0].Status; st != wire.StatusOffline && st != wire.StatusStored {
		t.Fatalf("status %q", st)
	}
}

func TestUnauthenticatedAndForgedSendsDeliverNothing(t *testing.T) {
	nodes := gridtest.Swarm(t, 2, gridtest.InMemory())
	alice, bob := registerAccount(t, nodes[0]), registerAccount(t, nodes[1])
	cb := connect(t, nodes[1], bob.devs[0], gatewaytest.Options{})
	waitLocated(t, nodes[0], nodes[1], bob.devs[0])
	ctx := deliveryCtx(t)

	anon, err := gatewaytest.Dial(ctx, nodes[0].WSURL(), gatewaytest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	if _, err := anon.Send(ctx, msgID(1), []byte("anon"), bob.devs[0].ID()); !isCode(err, wire.CodeUnauthenticated) {
		t.Fatalf("unauthenticated send: %v", err)
	}
	// Auth with a proof signed by another key than the registered device's.
	impostor, _ := e2ee.NewDeviceKeys(time.Now())
	forged, err := anon.AuthBody(impostor, time.Now(), 1, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	aid := alice.devs[0].ID()
	forged.DeviceID = aid[:]
	if _, err := anon.Call(ctx, wire.OpAuth, forged); !isCode(err, wire.CodeAuthFailed) {
		t.Fatalf("forged auth: %v", err)
	}
	if code := anon.CloseStatus(ctx); code != gateway.CloseAuthFailed {
		t.Fatalf("close status %d", code)
	}
	// The first envelope bob sees is alice's real one.
	ca := connect(t, nodes[0], alice.devs[0], gatewaytest.Options{})
	ch, err := ca.StartSend(ctx, msgID(2), []byte("real"), bob.devs[0].ID())
	if err != nil {
		t.Fatal(err)
	}
	e, err := cb.NextEnvelope(ctx)
	if err != nil || string(e.Ciphertext) != "real" {
		t.Fatalf("bob got %q %v", e.Ciphertext, err)
	}
	_ = cb.Ack(ctx, e)
	if r, err := gatewaytest.WaitSend(ctx, ch); err != nil || r.Results[0].Status != wire.StatusDelivered {
		t.Fatalf("%+v %v", r, err)
	}
}

func isCode(err error, c wire.Code) bool {
	we, ok := err.(*wire.Error)
	return ok && we.Code == c
}

// gauge reads one gauge of a node's registry.
func gauge(t testing.TB, nd *node.Node, name string) float64 {
	mfs, err := nd.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var sum float64
			for _, m := range mf.GetMetric() {
				sum += metricValue(m)
			}
			return sum
		}
	}
	return 0
}

// labelledCounter reads the counter of a node's registry named name whose label has value (0 if there is none).
func labelledCounter(t testing.TB, nd *node.Node, name, label, value string) float64 {
	t.Helper()
	mfs, err := nd.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func metricValue(m *dto.Metric) float64 {
	if m.Gauge != nil {
		return m.Gauge.GetValue()
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return 0
}

func TestTenThousandMessagesArriveInOrderWithBoundedMemory(t *testing.T) {
	const (
		total     = 10_000
		size      = 4 << 10
		window    = 256 // the sender's pipeline
		sendQueue = 1024
	)
	nodes := gridtest.Swarm(t, 2, gridtest.InMemory(), gridtest.Configure(func(_ int, cfg *node.Config) {
		cfg.Delivery.WS.SendQueue = sendQueue
		cfg.Delivery.WS.RequestsPerSecond = 1e6
		cfg.Delivery.WS.RequestBurst = 1e6
		cfg.Delivery.WS.AccountRequestsPerSecond = 1e6
		cfg.Delivery.WS.AccountRequestBurst = 1e6
		cfg.Delivery.WS.AckTimeout = 30 * time.Second
	}))
	alice, bob := registerAccount(t, nodes[0]), registerAccount(t, nodes[1])
	ca := connect(t, nodes[0], alice.devs[0], gatewaytest.Options{})
	cb := connect(t, nodes[1], bob.devs[0], gatewaytest.Options{PushQueue: 8})
	waitLocated(t, nodes[0], nodes[1], bob.devs[0])
	// 40 MiB through two nodes under -race takes a minute or two on a loaded 2-core machine; the deadline only
	// guards against a hang (what this test asserts is order and bounded memory, not speed).
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseline := ms.HeapAlloc

	sendErr := make(chan error, 1)
	go func() {
		payload := make([]byte, size)
		var inflight []<-chan wire.Response
		for i := range total {
			binary.BigEndian.PutUint64(payload, uint64(i))
			ch, err := ca.StartSend(ctx, msgID(i), payload, bob.devs[0].ID())
			if err != nil {
				sendErr <- err
				return
			}
			inflight = append(inflight, ch)
			if len(inflight) == window {
				if r, err := gatewaytest.WaitSend(ctx, inflight[0]); err != nil || r.Results[0].Status != wire.StatusDelivered {
					sendErr <- fmt.Errorf("send %d: %+v %v", i-window, r, err)
					return
				}
				inflight = inflight[1:]
			}
		}
		for _, ch := range inflight {
			if r, err := gatewaytest.WaitSend(ctx, ch); err != nil || r.Results[0].Status != wire.StatusDelivered {
				sendErr <- fmt.Errorf("send: %+v %v", r, err)
				return
			}
		}
		sendErr <- nil
	}()

	var peakLive uint64
	var peakQueue, peakPending float64
	for i := range total {
		if i > 0 && i%2500 == 0 {
			// Read slowly: stop for a while so the whole pipeline fills up to its bounds, then measure.
			time.Sleep(300 * time.Millisecond)
			runtime.GC()
			runtime.ReadMemStats(&ms)
			peakLive = max(peakLive, ms.HeapAlloc)
			peakQueue = max(peakQueue, gauge(t, nodes[1], "gridchat_ws_send_queue_frames"))
			peakPending = max(peakPending, gauge(t, nodes[1], "gridchat_ws_pending_acks"))
		}
		e, err := cb.NextEnvelope(ctx)
		if err != nil {
			t.Fatalf("envelope %d: %v", i, err)
		}
		if !bytes.Equal(e.MessageID, msgID(i)) || len(e.Ciphertext) != size || binary.BigEndian.Uint64(e.Ciphertext) != uint64(i) {
			select {
			case err := <-sendErr:
				t.Fatalf("envelope %d is message %x: out of order; sender: %v", i, e.MessageID, err)
			default:
				t.Fatalf("envelope %d is message %x: out of order", i, e.MessageID)
			}
		}
		if err := cb.Ack(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
	grown := int64(peakLive) - int64(baseline)
	t.Logf("sent %d MiB; live heap grew by at most %.1f MiB; peak send queue %v frames, %v unacknowledged",
		total*size>>20, float64(grown)/(1<<20), peakQueue, peakPending)
	// 40 MiB went through; with the pipeline full, what the process holds stays a small, bounded part of it.
	if grown > 16<<20 {
		t.Fatalf("live heap grew by %d MiB while the reader was slow", grown>>20)
	}
	if peakQueue > window+16 || peakPending > window || peakPending == 0 {
		t.Fatalf("send queue reached %v frames and %v unacknowledged envelopes; the sender's window is %d", peakQueue, peakPending, window)
	}
	if s := strings.TrimSpace(fmt.Sprint(cb.Err())); s != "<nil>" {
		t.Fatalf("slow reader was disconnected: %s", s)
	}
}
