package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/gateway/gatewaytest"
	"github.com/iagon/gridchat/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// memDirectory is an in-memory Directory: the key directory's stand-in until node wires the real one.
type memDirectory struct {
	mu      sync.Mutex
	devices map[e2ee.DeviceID]DeviceKey
}

func (d *memDirectory) DeviceKey(_ context.Context, id e2ee.DeviceID) (DeviceKey, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	k, ok := d.devices[id]
	if !ok {
		return DeviceKey{}, fmt.Errorf("memdirectory: %s: %w", id, ErrUnknownDevice)
	}
	return k, nil
}

func (d *memDirectory) add(t testing.TB) *e2ee.DeviceKeys {
	t.Helper()
	dk, err := e2ee.NewDeviceKeys(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var acct e2ee.AccountID
	copy(acct[:], "account-"+dk.ID().String())
	d.devices[dk.ID()] = DeviceKey{Public: dk.Public(), Account: acct}
	return dk
}

type testHub struct {
	*Hub
	dir *memDirectory
	url string
	reg *prometheus.Registry
}

// newTestHub serves a Hub on 127.0.0.1 with a "send" operation that delivers to devices of this node only,
// through Push, exactly as node wires relay's dispatch.
func newTestHub(t testing.TB, lim WSLimits) *testHub {
	t.Helper()
	dir := &memDirectory{devices: make(map[e2ee.DeviceID]DeviceKey)}
	reg := prometheus.NewRegistry()
	h, err := NewHub(HubConfig{Gateway: "12D3KooWtestgateway", GatewayID: []byte("\x00\x24test-gateway-id"), Addrs: []string{"/ip4/127.0.0.1/tcp/1"}, Directory: dir,
		Limits: lim, Metrics: reg, MaxCiphertext: 64 << 10, MaxRecipients: 16})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Handle(wire.OpSend, localSend(h)); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET "+WSPath, h)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		h.Close()
		srv.Close()
	})
	return &testHub{Hub: h, dir: dir, url: gatewaytest.WSURL(srv.URL), reg: reg}
}

func localSend(h *Hub) Handler {
	return func(ctx context.Context, c *Call) (any, error) {
		var req wire.SendRequest
		if err := wire.StrictUnmarshal(c.Body, &req); err != nil {
			return nil, wire.Errorf(wire.CodeBadRequest, "%v", err)
		}
		id, devs, err := req.Validate(64<<10, 16)
		if err != nil {
			return nil, err
		}
		chans := make([]<-chan wire.Outcome, len(devs))
		for i, d := range devs {
			chans[i] = h.Push(wire.Envelope{MessageID: id, Sender: c.Device, Recipient: d, Ciphertext: req.Ciphertext})
		}
		return Deferred(func(ctx context.Context) (any, error) {
			var resp wire.SendResponse
			for i, ch := range chans {
				o := <-ch
				resp.Results = append(resp.Results, wire.RecipientResult{DeviceID: devs[i][:], Status: o.Status, Code: o.Code, Reason: o.Reason})
			}
			return resp, nil
		}), nil
	}
}

func (th *testHub) dial(t testing.TB, opts gatewaytest.Options) *gatewaytest.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := gatewaytest.Dial(ctx, th.url, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func (th *testHub) login(t testing.TB, dk *e2ee.DeviceKeys) *gatewaytest.Client {
	t.Helper()
	c := th.dial(t, gatewaytest.Options{})
	if _, err := c.Auth(ctxT(t), dk); err != nil {
		t.Fatalf("auth: %v", err)
	}
	return c
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantCode(t *testing.T, err error, code wire.Code) {
	t.Helper()
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != code {
		t.Fatalf("got %v, want error code %d (%s)", err, code, code.Reason())
	}
}

func mid(i int) []byte { return []byte(fmt.Sprintf("msg-%012d", i)) }

// receiveAndAck reads one envelope and acknowledges it.
func receiveAndAck(t *testing.T, c *gatewaytest.Client) wire.EnvelopePush {
	t.Helper()
	e, err := c.NextEnvelope(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Ack(ctxT(t), e); err != nil {
		t.Fatal(err)
	}
	return e
}

// expectOnlyMarker proves that nothing reached c before a marker envelope sent now by sender: pushes are in
// order, so the first envelope c sees must be the marker.
func expectOnlyMarker(t *testing.T, sender *gatewaytest.Client, c *gatewaytest.Client, to e2ee.DeviceID) {
	t.Helper()
	ch, err := sender.StartSend(ctxT(t), []byte("marker-marker-00"), []byte("marker"), to)
	if err != nil {
		t.Fatal(err)
	}
	e := receiveAndAck(t, c)
	if string(e.Ciphertext) != "marker" {
		t.Fatalf("recipient got %q before the marker", e.Ciphertext)
	}
	if r, err := gatewaytest.WaitSend(ctxT(t), ch); err != nil || r.Results[0].Status != wire.StatusDelivered {
		t.Fatalf("marker: %+v %v", r, err)
	}
}

func TestSendIsPushedAndAcknowledged(t *testing.T) {
	th := newTestHub(t, WSLimits{})
	a, b1 := th.dir.add(t), th.dir.add(t)
	ca := th.login(t, a)
	cb1, cb2 := th.login(t, b1), th.login(t, b1) // two connections of one device
	ch, err := ca.StartSend(ctxT(t), mid(1), []byte("ciphertext\x00\xff"), b1.ID())
	if err != nil {
		t.Fatal(err)
	}
	e1 := receiveAndAck(t, cb1)
	e2, err := cb2.NextEnvelope(ctxT(t)) // pushed to every connection; one ack is enough
	if err != nil {
		t.Fatal(err)
	}
	aid := a.ID()
	for _, e := range []wire.EnvelopePush{e1, e2} {
		if !bytes.Equal(e.Ciphertext, []byte("ciphertext\x00\xff")) || !bytes.Equal(e.MessageID, mid(1)) || !bytes.Equal(e.SenderDevice, aid[:]) {
			t.Fatalf("envelope %+v", e)
		}
	}
	r, err := gatewaytest.WaitSend(ctxT(t), ch)
	if err != nil || len(r.Results) != 1 || r.Results[0].Status != wire.StatusDelivered {
		t.Fatalf("%+v %v", r, err)
	}
	if !th.Connected(wire.DeviceID(b1.ID())) || th.ConnectedDevices() != 2 {
		t.Fatal("socket table does not list the connected devices")
	}
}

func TestUnknownAndOfflineRecipients(t *testing.T) {
	th := newTestHub(t, WSLimits{})
	a, off := th.dir.add(t), th.dir.add(t)
	ca := th.login(t, a)
	r, err := ca.Send(ctxT(t), mid(1), []byte("x"), off.ID())
	if err != nil || r.Results[0].Status != wire.StatusOffline {
		t.Fatalf("%+v %v", r, err)
	}
}

func TestDuplicateMessageIDIsPushedOnce(t *testing.T) {
	th := newTestHub(t, WSLimits{})
	a, b := th.dir.add(t), th.dir.add(t)
	ca, cb := th.login(t, a), th.login(t, b)
	ch1, _ := ca.StartSend(ctxT(t), mid(7), []byte("one"), b.ID())
	ch2, _ := ca.StartSend(ctxT(t), mid(7), []byte("one"), b.ID())
	receiveAndAck(t, cb)
	for _, ch := range []<-chan wire.Response{ch1, ch2} {
		if r, err := gatewaytest.WaitSend(ctxT(t), ch); err != nil || r.Results[0].Status != wire.StatusDelivered {
			t.Fatalf("%+v %v", r, err)
		}
	}
	expectOnlyMarker(t, ca, cb, b.ID())
	if got := metricValue(th.metrics.dropped.WithLabelValues("duplicate")); got != 1 {
		t.Fatalf("duplicates dropped: %v", got)
	}
}

func TestUnauthenticatedSendIsRefusedAndConnectionKept(t *testing.T) {
	th := newTestHub(t, WSLimits{})
	a, b := th.dir.add(t), th.dir.add(t)
	cb := th.login(t, b)
	c := th.dial(t, gatewaytest.Options{})
	_, err := c.Send(ctxT(t), mid(1), []byte("x"), b.ID())
	wantCode(t, err, wire.CodeUnauthenticated)
	// The connection stays open: the client may still authenticate and then send.
	if _, err := c.Auth(ctxT(t), a); err != nil {
		t.Fatalf("auth after refusal: %v", err)
	}
	expectOnlyMarker(t, c, cb, b.ID())
}

func TestBadSignatureClosesConnection(t *testing.T) {
	th := newTestHub(t, WSLimits{})
	a, b := th.dir.add(t), th.dir.add(t)
	cb := th.login(t, b)
	c := th.dial(t, gatewaytest.Options{})
	body, err := c.AuthBody(a, time.Now(), 1, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	body.Signature[0] ^= 1
	_, err = c.Call(ctxT(t), wire.OpAuth, body)
	wantCode(t, err, wire.CodeAuthFailed)
	if code := c.CloseStatus(ctxT(t)); code != CloseAuthFailed {
		t.Fatalf("close status %d, want %d", code, CloseAuthFailed)
	}
	ca := th.login(t, a)
	expectOnlyMarker(t, ca, cb, b.ID())
}

func TestAuthOfUnknownOrRevokedDeviceFails(t *testing.T) {
	th := newTestHub(t, WSLimits{})
	stranger, err := e2ee.NewDeviceKeys(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := th.dial(t, gatewaytest.Options{})
	_, err = c.Auth(ctxT(t), stranger)
	wantCode(t, err, wire.CodeAuthFailed)

	rev := th.dir.add(t)
	th.dir.mu.Lock()
	k := th.dir.devices[rev.ID()]
	k.Revoked = true
	th.dir.devices[rev.ID()] = k
	th.dir.mu.Unlock()
	c2 := th.dial(t, gatewaytest.Options{})
	_, err = c2.Auth(ctxT(t), rev)
	wantCode(t, err, wire.CodeRevoked)
	if code := c2.CloseStatus(ctxT(t)); code != CloseAuthFailed {
		t.Fatalf("close status %d", code)
	}
}

func TestReplayedAuthNonceIsRefused(t *testing.T) {
	th := newTestHub(t, WSLimits{})
	a, b := th.dir.add(t), th.dir.add(t)
	cb := th.login(t, b)
	// A valid auth captured on one connection...
	c1 := th.dial(t, gatewaytest.Options{})
	body, err := c1.AuthBody(a, time.Now(), uint64(time.Now().UnixNano()), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c1.Call(ctxT(t), wire.OpAuth, body); err != nil {
		t.Fatal(err)
	}
	// ...is refused on the same connection...
	_, err = c1.Call(ctxT(t), wire.OpAuth, body)
	wantCode(t, err, wire.CodeAlreadyAuthenticated)
	// ...and replayed on another connection, whose nonce differs.
	c2 := th.dial(t, gatewaytest.Options{})
	_, err = c2.Call(ctxT(t), wire.OpAuth, body)
	wantCode(t, err, wire.CodeBadNonce)
	if code := c2.CloseStatus(ctxT(t)); code != CloseAuthFailed {
		t.Fatalf("close status %d", code)
	}
	// A replay that also carries the new connection's nonce fails the signature, which covers the nonce.
	c3 := th.dial(t, gatewaytest.Options{})
	body.Nonce = c3.Hello().Nonce
	_, err = c3.Call(ctxT(t), wire.OpAuth, body)
	wantCode(t, err, wire.CodeAuthFailed)
	expectOnlyMarker(t, c1, cb, b.ID())
}

func TestOversizedFramesCloseConnection(t *testing.T) {
	th := newTestHub(t, WSLimits{MaxFrameBytes: 32 << 10, MaxPreAuthFrameBytes: 4 << 10})
	a, b := th.dir.add(t), th.dir.add(t)
	cb := th.login(t, b)
	// Before auth the cap is MaxPreAuthFrameBytes.
	c := th.dial(t, gatewaytest.Options{})
	big := fmt.Sprintf(`{"v":1,"id":1,"op":"ping","body":{"pad":"%s"}}`, strings.Repeat("x", 5<<10))
	if err := c.WriteRaw(ctxT(t), []byte(big)); err != nil {
		t.Fatal(err)
	}
	if code := c.CloseStatus(ctxT(t)); code != websocket.StatusMessageTooBig {
		t.Fatalf("pre-auth: close status %d, want 1009", code)
	}
	// After auth, MaxFrameBytes: a send just under passes, one over closes.
	ca := th.login(t, a)
	// (ping's body must be empty, so the frame is answered bad_request: read and answered, not cut.)
	_, err := ca.Call(ctxT(t), wire.OpPing, map[string]string{"pad": strings.Repeat("x", 20<<10)})
	wantCode(t, err, wire.CodeBadRequest)
	_, err = ca.Send(ctxT(t), mid(1), bytes.Repeat([]byte{1}, 40<<10), b.ID())
	if err == nil {
		t.Fatal("oversized send answered")
	}
	if code := ca.CloseStatus(ctxT(t)); code != websocket.StatusMessageTooBig {
		t.Fatalf("post-auth: close status %d, want 1009", code)
	}
	ca2 := th.login(t, a)
	expectOnlyMarker(t, ca2, cb, b.ID())
}

func TestMalformedFramesAreRefusedAndConnectionKept(t *testing.T) {
	th := newTestHub(t, WSLimits{})
	a, b := th.dir.add(t), th.dir.add(t)
	cb := th.login(t, b)
	ca := th.login(t, a)
	for _, f := range []string{
		`{"v":1,"id":100,"op":"send","body":{"message_id":`, // truncated JSON
		`{"v":1,"id":101,"op":"send","body":{},"x":1}`,      // unknown field
		`{"v":9,"id":102,"op":"send","body":{}}`,            // wrong version
		`{"v":1,"op":"send","body":{}}`,                     // missing id
		`not json at all`,
	} {
		if err := ca.WriteRaw(ctxT(t), []byte(f)); err != nil {
			t.Fatal(err)
		}
	}
	// A well-formed request with a malformed body.
	_, err := ca.Call(ctxT(t), wire.OpSend, map[string]any{"message_id": "AAAA", "ciphertext": "eA==", "recipients": []string{}, "extra": 1})
	wantCode(t, err, wire.CodeBadRequest)
	// Frames whose id could not be read are answered with id 0.
	deadline := time.Now().Add(5 * time.Second)
	for len(ca.Unsolicited()) < 4 && time.Now().Before(deadline) {
		if _, err := ca.Call(ctxT(t), wire.OpPing, nil); err != nil {
			t.Fatal(err)
		}
	}
	reasons := map[string]int{}
	for _, e := range ca.Unsolicited() {
		reasons[e.Reason]++
	}
	if reasons["malformed"] != 4 || reasons["unsupported_version"] != 0 {
		// The wrong-version frame had a readable id, so it is answered on id 102, not 0.
		t.Fatalf("id-0 error frames: %v", reasons)
	}
	if got := metricValue(th.metrics.refused.WithLabelValues("unsupported_version")); got != 1 {
		t.Fatalf("unsupported_version refusals: %v", got)
	}
	expectOnlyMarker(t, ca, cb, b.ID())
}

func TestFloodIsRateLimitedThenDisconnected(t *testing.T) {
	lim := WSLimits{RequestsPerSecond: 5, RequestBurst: 10, MaxRateViolations: 20}
	th := newTestHub(t, lim)
	a, b := th.dir.add(t), th.dir.add(t)
	cb := th.login(t, b)
	ca := th.login(t, a) // auth used one token of the burst
	var chans []<-chan wire.Response
	for i := range 200 {
		ch, err := ca.StartSend(ctxT(t), mid(i), []byte(fmt.Sprint(i)), b.ID())
		if err != nil {
			break // the gateway closed the connection
		}
		chans = append(chans, ch)
	}
	if code := ca.CloseStatus(ctxT(t)); code != CloseRateLimited {
		t.Fatalf("close status %d, want %d", code, CloseRateLimited)
	}
	accepted, limited := 0, 0
	for _, ch := range chans {
		_, err := gatewaytest.WaitSend(ctxT(t), ch)
		var we *wire.Error
		switch {
		case errors.As(err, &we) && we.Code == wire.CodeRateLimited:
			limited++
		case err == nil:
			accepted++
		}
	}
	if limited == 0 || accepted > lim.RequestBurst {
		t.Fatalf("accepted %d, rate limited %d", accepted, limited)
	}
	// Exactly the accepted sends reached the recipient, in order; the refused ones never did.
	got := 0
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		e, err := cb.NextEnvelope(ctx)
		cancel()
		if err != nil {
			break
		}
		if string(e.Ciphertext) != fmt.Sprint(got) {
			t.Fatalf("envelope %d is %q", got, e.Ciphertext)
		}
		got++
	}
	if got > lim.RequestBurst {
		t.Fatalf("recipient got %d envelopes, more than the burst", got)
	}
	if v := metricValue(th.metrics.closed.WithLabelValues("rate_limited")); v != 1 {
		t.Fatalf("rate_limited closes: %v", v)
	}
}

func TestHandshakeThatNeverCompletesIsCut(t *testing.T) {
	th := newTestHub(t, WSLimits{HandshakeTimeout: 300 * time.Millisecond})
	idle := th.dial(t, gatewaytest.Options{})
	// A slow-loris client that keeps sending frames but never authenticates is cut all the same.
	busy := th.dial(t, gatewaytest.Options{})
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				if _, err := busy.Call(context.Background(), wire.OpPing, nil); err != nil {
					return
				}
			}
		}
	}()
	start := time.Now()
	for _, c := range []*gatewaytest.Client{idle, busy} {
		if code := c.CloseStatus(ctxT(t)); code != CloseHandshakeTimeout {
			t.Fatalf("close status %d, want %d", code, CloseHandshakeTimeout)
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("cut after %s", d)
	}
	if v := metricValue(th.metrics.closed.WithLabelValues("handshake_timeout")); v != 2 {
		t.Fatalf("handshake_timeout closes: %v", v)
	}
}

func TestSlowConsumerIsDisconnectedNotBuffered(t *testing.T) {
	// Senders keep at most MaxInFlight sends open (their responses always fit their queue); unacknowledged
	// pushes time out quickly so they keep coming; the recipient stops reading after one push.
	th := newTestHub(t, WSLimits{SendQueue: 8, MaxInFlight: 6, AckTimeout: 100 * time.Millisecond,
		MaxPendingPerDevice: 1000, RequestsPerSecond: 1e6, RequestBurst: 1e6, AccountRequestsPerSecond: 1e6, AccountRequestBurst: 1e6})
	b := th.dir.add(t)
	cb := th.dial(t, gatewaytest.Options{PushQueue: 1})
	if _, err := cb.Auth(ctxT(t), b); err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte{7}, 60<<10)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for s := range 4 {
		ca := th.login(t, th.dir.add(t))
		wg.Add(1)
		go func() {
			defer wg.Done()
			var chans []<-chan wire.Response
			for i := 0; i < 5000 && th.Connected(wire.DeviceID(b.ID())); i++ {
				ch, err := ca.StartSend(ctxT(t), mid(s*10000+i), payload, b.ID())
				if err != nil {
					errs <- err
					return
				}
				chans = append(chans, ch)
				if len(chans) >= 6 {
					if _, err := gatewaytest.WaitSend(ctxT(t), chans[0]); err != nil {
						errs <- err
						return
					}
					chans = chans[1:]
				}
			}
			for _, ch := range chans {
				r, err := gatewaytest.WaitSend(ctxT(t), ch)
				if err != nil {
					errs <- err
					return
				}
				if st := r.Results[0].Status; st != wire.StatusFailed && st != wire.StatusOffline {
					errs <- fmt.Errorf("result %+v", r.Results[0])
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if th.Connected(wire.DeviceID(b.ID())) {
		t.Fatal("slow consumer still connected")
	}
	if v := metricValue(th.metrics.closed.WithLabelValues("slow_consumer")); v != 1 {
		t.Fatalf("slow_consumer closes: %v (write_failed %v, idle %v)", v, metricValue(th.metrics.closed.WithLabelValues("write_failed")), metricValue(th.metrics.closed.WithLabelValues("idle_timeout")))
	}
	if q := metricValue(th.metrics.queueDepth); q != 0 {
		t.Fatalf("queue depth after close: %v", q)
	}
}

func TestAckTimeoutFailsDelivery(t *testing.T) {
	th := newTestHub(t, WSLimits{AckTimeout: 200 * time.Millisecond})
	a, b := th.dir.add(t), th.dir.add(t)
	ca, cb := th.login(t, a), th.login(t, b)
	ch, _ := ca.StartSend(ctxT(t), mid(1), []byte("x"), b.ID())
	if _, err := cb.NextEnvelope(ctxT(t)); err != nil { // read but never acknowledged
		t.Fatal(err)
	}
	r, err := gatewaytest.WaitSend(ctxT(t), ch)
	if err != nil || r.Results[0].Status != wire.StatusFailed || r.Results[0].Reason != wire.FailAckTimeout {
		t.Fatalf("%+v %v", r, err)
	}
}

func TestHandleRejectsDuplicateOps(t *testing.T) {
	th := newTestHub(t, WSLimits{})
	if err := th.Handle(wire.OpSend, localSend(th.Hub)); err == nil {
		t.Fatal("second registration of send accepted")
	}
	ids := make(chan string, 2)
	if err := th.Handle("lookup", func(_ context.Context, c *Call) (any, error) {
		ids <- c.ConnID
		return map[string]int{"n": 1}, nil
	}, AllowUnauthenticated()); err != nil {
		t.Fatal(err)
	}
	closed := make(chan string, 1)
	th.OnConnClosed(func(id string) { closed <- id })
	c := th.dial(t, gatewaytest.Options{})
	body, err := c.Call(ctxT(t), "lookup", nil)
	if err != nil || string(body) != `{"n":1}` {
		t.Fatalf("%s %v", body, err)
	}
	_, err = c.Call(ctxT(t), "nope", nil)
	wantCode(t, err, wire.CodeUnknownOp)
	// A handler that panics fails its request; the connection and the node go on.
	if err := th.Handle("buggy", func(context.Context, *Call) (any, error) { panic("bug") }, AllowUnauthenticated()); err != nil {
		t.Fatal(err)
	}
	_, err = c.Call(ctxT(t), "buggy", nil)
	wantCode(t, err, wire.CodeInternal)
	if _, err := c.Call(ctxT(t), wire.OpPing, nil); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if id := <-ids; id != <-closed || id == "" {
		t.Fatal("close hook did not report the connection's ID")
	}
}

// metricValue reads a counter's or gauge's current value.
func metricValue(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		return -1
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

func TestKeepaliveCutsSilentClientAndKeepsLiveOne(t *testing.T) {
	th := newTestHub(t, WSLimits{PingInterval: 50 * time.Millisecond, IdleTimeout: 300 * time.Millisecond})
	a, b := th.dir.add(t), th.dir.add(t)
	live := th.login(t, a) // its reader answers pings
	// A client that authenticates and then never reads again: pings go unanswered.
	ws, _, err := websocket.Dial(ctxT(t), th.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	_, data, err := ws.Read(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	f, err := wire.DecodeServerFrame(data)
	if err != nil {
		t.Fatal(err)
	}
	var hello wire.Hello
	if err := wire.StrictUnmarshal(f.Push.Body, &hello); err != nil {
		t.Fatal(err)
	}
	proof, _ := e2ee.SignAuth(b, hello.GatewayID, hello.Nonce, time.Now())
	on, off, _ := gatewaytest.PresencePair(b, hello, time.Now(), 1, time.Minute)
	bid := b.ID()
	req, _ := wire.EncodeRequest(1, wire.OpAuth, wire.AuthRequest{DeviceID: bid[:], Nonce: hello.Nonce, Time: proof.Time.Unix(),
		Signature: proof.Sig, Presence: on, Offline: off})
	if err := ws.Write(ctxT(t), websocket.MessageText, req); err != nil {
		t.Fatal(err)
	}
	if _, data, err := ws.Read(ctxT(t)); err != nil || !bytes.Contains(data, []byte(`"account_id"`)) {
		t.Fatalf("auth: %s %v", data, err) // the last frame this client reads
	}
	if !th.Connected(wire.DeviceID(b.ID())) {
		t.Fatal("not connected after auth")
	}
	deadline := time.Now().Add(5 * time.Second)
	for th.Connected(wire.DeviceID(b.ID())) {
		if time.Now().After(deadline) {
			t.Fatal("silent client never cut")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if v := metricValue(th.metrics.closed.WithLabelValues("idle_timeout")); v != 1 {
		t.Fatalf("idle_timeout closes: %v", v)
	}
	// The live client, idle but answering pings, is still served.
	if _, err := live.Call(ctxT(t), wire.OpPing, nil); err != nil {
		t.Fatalf("live client: %v", err)
	}
}

func TestPingBodyMustBeEmpty(t *testing.T) {
	th := newTestHub(t, WSLimits{})
	c := th.dial(t, gatewaytest.Options{})
	if _, err := c.Call(ctxT(t), wire.OpPing, nil); err != nil {
		t.Fatalf("ping without body: %v", err)
	}
	if _, err := c.Call(ctxT(t), wire.OpPing, map[string]any{}); err != nil {
		t.Fatalf("ping with {}: %v", err)
	}
	_, err := c.Call(ctxT(t), wire.OpPing, map[string]any{"x": 1})
	wantCode(t, err, wire.CodeBadRequest)
	if _, err := c.Call(ctxT(t), wire.OpPing, nil); err != nil {
		t.Fatalf("connection not kept after a bad ping: %v", err)
	}
}

// MaxConnsPerDevice: the connection over the cap is refused busy and closed (4002) while the others are
// served; a slot freed by a disconnect is taken again.
func TestConnectionsOfOneDeviceOverTheCapAreRefusedBusy(t *testing.T) {
	th := newTestHub(t, WSLimits{MaxConnsPerDevice: 2})
	a := th.dir.add(t)
	first, second := th.login(t, a), th.login(t, a)
	third := th.dial(t, gatewaytest.Options{})
	_, err := third.Auth(ctxT(t), a)
	wantCode(t, err, wire.CodeBusy)
	if code := third.CloseStatus(ctxT(t)); code != CloseAuthFailed {
		t.Fatalf("connection over the cap: close status %d, want %d", code, CloseAuthFailed)
	}
	for _, c := range []*gatewaytest.Client{first, second} {
		if _, err := c.Call(ctxT(t), wire.OpPing, nil); err != nil {
			t.Fatalf("connection within the cap: %v", err)
		}
	}
	first.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := th.dial(t, gatewaytest.Options{})
		_, err := c.Auth(ctxT(t), a)
		if err == nil {
			break
		}
		wantCode(t, err, wire.CodeBusy)
		if time.Now().After(deadline) {
			t.Fatal("the slot of a closed connection was never freed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ClockSkew: an auth proof dated further from the gateway's clock than ClockSkew, either way, is refused and
// the connection closed; one within it is accepted.
func TestAuthProofOutsideClockSkewIsRefused(t *testing.T) {
	th := newTestHub(t, WSLimits{ClockSkew: time.Minute})
	a := th.dir.add(t)
	for _, tc := range []struct {
		off time.Duration
		ok  bool
	}{{-2 * time.Minute, false}, {2 * time.Minute, false}, {-30 * time.Second, true}, {30 * time.Second, true}} {
		c := th.dial(t, gatewaytest.Options{})
		now := time.Now().Add(tc.off)
		body, err := c.AuthBody(a, now, uint64(now.UnixNano()), 10*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Call(ctxT(t), wire.OpAuth, body)
		if tc.ok {
			if err != nil {
				t.Fatalf("proof %v off: %v", tc.off, err)
			}
			continue
		}
		wantCode(t, err, wire.CodeAuthFailed)
		if code := c.CloseStatus(ctxT(t)); code != CloseAuthFailed {
			t.Fatalf("proof %v off: close status %d, want %d", tc.off, code, CloseAuthFailed)
		}
	}
}

// PresenceTTL: presence records that would live longer than PresenceTTL after signing are refused at auth.
func TestPresenceLivingLongerThanPresenceTTLIsRefused(t *testing.T) {
	th := newTestHub(t, WSLimits{PresenceTTL: 10 * time.Minute})
	a := th.dir.add(t)
	for _, tc := range []struct {
		ttl time.Duration
		ok  bool
	}{{11 * time.Minute, false}, {9 * time.Minute, true}} {
		c := th.dial(t, gatewaytest.Options{})
		now := time.Now()
		body, err := c.AuthBody(a, now, uint64(now.UnixNano()), tc.ttl)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Call(ctxT(t), wire.OpAuth, body)
		if tc.ok {
			if err != nil {
				t.Fatalf("presence for %v: %v", tc.ttl, err)
			}
			continue
		}
		wantCode(t, err, wire.CodeAuthFailed)
	}
}

// DedupeWindow: a message ID is dropped as a duplicate while it is among the device's last DedupeWindow
// envelopes, and pushed again once it has left the window.
func TestDedupeWindowIsBounded(t *testing.T) {
	th := newTestHub(t, WSLimits{DedupeWindow: 2})
	a, b := th.dir.add(t), th.dir.add(t)
	ca, cb := th.login(t, a), th.login(t, b)
	deliver := func(i int, pushed bool) {
		t.Helper()
		ch, err := ca.StartSend(ctxT(t), mid(i), []byte(fmt.Sprintf("m%d", i)), b.ID())
		if err != nil {
			t.Fatal(err)
		}
		if pushed {
			if e := receiveAndAck(t, cb); string(e.MessageID) != string(mid(i)) {
				t.Fatalf("pushed %q, want %q", e.MessageID, mid(i))
			}
		}
		if r, err := gatewaytest.WaitSend(ctxT(t), ch); err != nil || r.Results[0].Status != wire.StatusDelivered {
			t.Fatalf("send %d: %+v %v", i, r, err)
		}
	}
	deliver(1, true)
	deliver(2, true)
	deliver(2, false) // within the window: the first push's outcome, nothing pushed
	deliver(3, true)  // the window now holds 2 and 3
	deliver(1, true)  // 1 left the window: pushed again
	expectOnlyMarker(t, ca, cb, b.ID())
	if got := metricValue(th.metrics.dropped.WithLabelValues("duplicate")); got != 1 {
		t.Fatalf("duplicates dropped: %v, want 1", got)
	}
}
