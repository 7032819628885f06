package node_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/gateway/gatewaytest"
	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/node"
	"github.com/iagon/gridchat/relay"
	"github.com/iagon/gridchat/wire"
)

// connectSeq opens a WebSocket to nd and authenticates as dev with presence sequence numbers seq (online) and
// seq+1 (offline), retrying while nd's directory has not yet learnt the device. It returns the client and the
// signed online record it handed over.
func connectSeq(t testing.TB, nd *node.Node, dev *e2ee.DeviceKeys, seq uint64) (*gatewaytest.Client, []byte) {
	t.Helper()
	ctx := deliveryCtx(t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := gatewaytest.Dial(ctx, nd.WSURL(), gatewaytest.Options{})
		if err != nil {
			t.Fatal(err)
		}
		body, err := c.AuthBody(dev, time.Now(), seq, 30*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if _, err = c.Call(ctx, wire.OpAuth, body); err == nil {
			t.Cleanup(c.Close)
			return c, body.Presence
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("auth on %s: %v", nd.ID(), err)
		}
		time.Sleep(50 * time.Millisecond) // polling the directory's replication, with a deadline
	}
}

// waitGateways polls until from's presence lists exactly the gateways of want for dev, newest first (an empty
// want: the device is not online).
func waitGateways(t testing.TB, from *node.Node, dev *e2ee.DeviceKeys, want ...*node.Node) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		locs, err := from.Presence().Locations(deliveryCtx(t), wire.DeviceID(dev.ID()))
		ok := len(locs) == len(want) && (len(want) > 0 || errors.Is(err, relay.ErrNotOnline))
		for i := range want {
			ok = ok && locs[i].Gateway == want[i].ID()
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: device at %v (%v), want %d gateways", from.ID(), locs, err, len(want))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// receiveAndAck waits for one envelope on c, checks it is message id, and acknowledges it.
func receiveAndAck(t testing.TB, c *gatewaytest.Client, id []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(deliveryCtx(t), 10*time.Second)
	defer cancel()
	e, err := c.NextEnvelope(ctx)
	if err != nil {
		t.Fatalf("waiting for %x: %v", id, err)
	}
	if !bytes.Equal(e.MessageID, id) {
		t.Fatalf("got message %x, want %x", e.MessageID, id)
	}
	if err := c.Ack(ctx, e); err != nil {
		t.Fatal(err)
	}
}

// senderAndDevice starts a swarm of three, registers Alice on node 2 and Bob on node 0, and connects Alice's
// device to node 2. It returns the swarm, Alice, Bob's device d (not connected) and Alice's connection, from
// which the test sends to d.
func senderAndDevice(t *testing.T) ([]*node.Node, *account, *e2ee.DeviceKeys, *gatewaytest.Client) {
	t.Helper()
	nodes := gridtest.Swarm(t, 3, gridtest.InMemory())
	alice, bob := registerAccount(t, nodes[2]), registerAccount(t, nodes[0])
	sender := connect(t, nodes[2], alice.devs[0], gatewaytest.Options{})
	return nodes, alice, bob.devs[0], sender
}

// sendDeliveredOn sends message n with body from sender to d, receives and acknowledges it on c, and fails
// unless the sender's result is delivered; what names the send in that failure.
func sendDeliveredOn(t *testing.T, ctx context.Context, sender, c *gatewaytest.Client, d *e2ee.DeviceKeys, n int, body, what string) {
	t.Helper()
	pending, err := sender.StartSend(ctx, msgID(n), []byte(body), d.ID())
	if err != nil {
		t.Fatal(err)
	}
	receiveAndAck(t, c, msgID(n))
	r, err := gatewaytest.WaitSend(ctx, pending)
	if err != nil {
		t.Fatal(err)
	}
	if st := r.Results[0].Status; st != wire.StatusDelivered {
		t.Fatalf("%s: %+v", what, r.Results[0])
	}
}

// waitGauge polls until nd's metric name (summed, see gauge) is at least min, failing with what after 20 s.
func waitGauge(t *testing.T, nd *node.Node, name string, min float64, what string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for gauge(t, nd, name) < min {
		if time.Now().After(deadline) {
			t.Fatal(what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDeviceOnTwoGatewaysStaysReachableWhenNewestConnectionCloses: a device connected through node 0 and node 1
// at once is reached live from node 2; when the connection its newest presence names closes, the gateway's
// offline record withdraws that gateway only, and the next send reaches the device live on the other one. That
// gateway is now named only by an older record, so the envelope is also copied to the mailbox; the device
// follows its mailbox on that connection, and the copy is not pushed to it a second time.
func TestDeviceOnTwoGatewaysStaysReachableWhenNewestConnectionCloses(t *testing.T) {
	nodes, _, d, sender := senderAndDevice(t)
	seq := uint64(time.Now().UnixNano())
	c0, _ := connectSeq(t, nodes[0], d, seq)
	fetchMailbox(t, c0, d)
	c1, _ := connectSeq(t, nodes[1], d, seq+10) // the newest record names node 1
	waitGateways(t, nodes[2], d, nodes[1], nodes[0])
	ctx := deliveryCtx(t)

	start := time.Now()
	sendDeliveredOn(t, ctx, sender, c1, d, 1, "first", "first send")
	t.Logf("delivered through the newest gateway in %v", time.Since(start))

	c1.Close()
	waitGateways(t, nodes[2], d, nodes[0])
	start = time.Now()
	sendDeliveredOn(t, ctx, sender, c0, d, 2, "second", "second send after the newest connection closed")
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("second send took %v", took)
	} else {
		t.Logf("delivered through the remaining gateway in %v", took)
	}
	waitGauge(t, nodes[2], "gridchat_relay_mailbox_copies_total", 1, "no mailbox copy was stored")
	qctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if e, err := c0.NextEnvelope(qctx); err == nil {
		t.Fatalf("pushed again: %x", e.MessageID)
	}
}

// TestDeviceOnTwoGatewaysIsOfflineOnceBothConnectionsEnd: when a device's connections to both gateways end,
// each gateway's offline record withdraws its own gateway and the device is offline everywhere; a node that
// gossips the device's old online records again (it holds them from auth) does not bring it back, and a node
// cannot publish a record naming a gateway the device never used.
func TestDeviceOnTwoGatewaysIsOfflineOnceBothConnectionsEnd(t *testing.T) {
	nodes, alice, d, sender := senderAndDevice(t)
	seq := uint64(time.Now().UnixNano())
	c0, on0 := connectSeq(t, nodes[0], d, seq)
	c1, on1 := connectSeq(t, nodes[1], d, seq+10)
	waitGateways(t, nodes[2], d, nodes[1], nodes[0])
	ctx := deliveryCtx(t)

	c0.Close()
	waitGateways(t, nodes[2], d, nodes[1])
	c1.Close()
	waitGateways(t, nodes[2], d)

	// Replays: node 0 and node 1 publish the device's genuine, unexpired online records again.
	before := gauge(t, nodes[2], "gridchat_presence_received_total")
	for i, rec := range [][]byte{on0, on1} {
		if err := nodes[i].Presence().Publish(ctx, rec); err != nil {
			t.Fatalf("replay on node %d: %v", i, err)
		}
	}
	waitGauge(t, nodes[2], "gridchat_presence_received_total", before+2, "the replayed records never arrived by gossip")
	for i, nd := range nodes {
		if locs, err := nd.Presence().Locations(ctx, wire.DeviceID(d.ID())); !errors.Is(err, relay.ErrNotOnline) {
			t.Fatalf("node %d locates the device after its connections ended: %v %v", i, locs, err)
		}
	}
	// A record naming node 2, which the device never connected to, cannot be made from the device's records.
	forged, err := wire.SignPresence(alice.devs[0], wire.Presence{Gateway: nodes[2].ID().String(), Seq: seq + 100,
		Expires: time.Now().Add(time.Minute), Online: true}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	forged = bytes.Replace(forged, alice.devs[0].Public().Signing, d.Public().Signing, 1)
	if err := nodes[0].Presence().Publish(ctx, forged); err == nil {
		t.Fatal("a record with the device's key and another device's signature was published")
	}
	r, err := sender.Send(ctx, msgID(1), []byte("after"), d.ID())
	if err != nil {
		t.Fatal(err)
	}
	if st := r.Results[0].Status; st != wire.StatusStored {
		t.Fatalf("send to a device with no connection: %+v, want stored", r.Results[0])
	}
}

// TestGatewayWithholdingOfflineRecordCannotLoseEnvelopes: node 0 once had the device and kept its online record
// without ever publishing the offline one, and it acknowledges envelopes without pushing them. After the
// device's newer connection (node 1) ends, node 0 is still tried, and it answers "delivered"; the envelope was
// also kept in the device's mailbox, so the device gets it on its next connection.
func TestGatewayWithholdingOfflineRecordCannotLoseEnvelopes(t *testing.T) {
	nodes := gridtest.Swarm(t, 3, gridtest.InMemory(), gridtest.Configure(func(i int, cfg *node.Config) {
		if i == 0 {
			cfg.Delivery.DropEnvelope = func(wire.Envelope) bool { return true }
		}
	}))
	alice, bob := registerAccount(t, nodes[2]), registerAccount(t, nodes[1])
	d := bob.devs[0]
	sender := connect(t, nodes[2], alice.devs[0], gatewaytest.Options{})
	ctx := deliveryCtx(t)
	seq := uint64(time.Now().UnixNano())

	// The device's online record for node 0, as node 0 got it at auth; its offline record is never published.
	hc, err := gatewaytest.Dial(ctx, nodes[0].WSURL(), gatewaytest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	on0, _, err := gatewaytest.PresencePair(d, hc.Hello(), time.Now(), seq, 30*time.Minute)
	hc.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := nodes[0].Presence().Publish(ctx, on0); err != nil {
		t.Fatal(err)
	}
	c1, _ := connectSeq(t, nodes[1], d, seq+10)
	waitGateways(t, nodes[2], d, nodes[1], nodes[0])
	c1.Close()
	waitGateways(t, nodes[2], d, nodes[0])
	locs, _ := nodes[2].Presence().Locations(ctx, wire.DeviceID(d.ID()))
	if !locs[0].Superseded {
		t.Fatal("node 0 is named only by a record older than the device's newest, yet not superseded")
	}

	r, err := sender.Send(ctx, msgID(1), []byte("kept"), d.ID())
	if err != nil {
		t.Fatal(err)
	}
	if st := r.Results[0].Status; st != wire.StatusDelivered {
		t.Fatalf("send through node 0: %+v (node 0 acknowledges everything)", r.Results[0])
	}
	waitGauge(t, nodes[2], "gridchat_relay_mailbox_copies_total", 1, "no mailbox copy was stored")
	back, _ := connectSeq(t, nodes[1], d, seq+20)
	fetchMailbox(t, back, d)
	nextEnvelopeIs(t, back, 1, "kept")
}

// TestSendRacingTheNewestConnectionsCloseIsDelivered: a send dispatched right after the device's newest
// connection closed, before the sender's node may have learnt the offline record, is still delivered live:
// the closed gateway answers offline or gone, and the envelope goes on to the device's other gateway.
func TestSendRacingTheNewestConnectionsCloseIsDelivered(t *testing.T) {
	nodes, _, d, sender := senderAndDevice(t)
	seq := uint64(time.Now().UnixNano())
	c0, _ := connectSeq(t, nodes[0], d, seq)
	c1, _ := connectSeq(t, nodes[1], d, seq+10)
	waitGateways(t, nodes[2], d, nodes[1], nodes[0])
	ctx := deliveryCtx(t)

	c1.Close()
	start := time.Now()
	sendDeliveredOn(t, ctx, sender, c0, d, 1, "racing", "send racing the close")
	t.Logf("delivered in %v, %v retries on the sender's node", time.Since(start),
		gauge(t, nodes[2], "gridchat_relay_gateway_retries_total"))
}
