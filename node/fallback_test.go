package node_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/gateway/gatewaytest"
	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/node"
	"github.com/iagon/gridchat/relay/mailbox"
	"github.com/iagon/gridchat/wire"
)

// fetchMailbox starts the delivery of dev's mailbox on c ("mailbox.fetch", following).
func fetchMailbox(t *testing.T, c *gatewaytest.Client, dev *e2ee.DeviceKeys) {
	t.Helper()
	r, err := mailbox.NewFetchRequest(dev, true, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := c.Call(deliveryCtx(t), node.OpMailboxFetch,
		node.MailboxFetchRequest{DevicePublic: r.DevicePublic, Request: r.Request, Body: r.Body})
	if err != nil {
		t.Fatalf("mailbox.fetch: %v", err)
	}
	var resp node.MailboxFetchResponse
	if err := json.Unmarshal(raw, &resp); err != nil {
		t.Fatal(err)
	}
}

// nextEnvelopeIs reads the next envelope pushed on c and checks it is message id with ciphertext ct.
func nextEnvelopeIs(t *testing.T, c *gatewaytest.Client, id int, ct string) wire.EnvelopePush {
	t.Helper()
	e, err := c.NextEnvelope(deliveryCtx(t))
	if err != nil {
		t.Fatalf("waiting for message %d: %v", id, err)
	}
	if string(e.MessageID) != string(msgID(id)) || string(e.Ciphertext) != ct {
		t.Fatalf("got message %x %q, want %x %q", e.MessageID, e.Ciphertext, msgID(id), ct)
	}
	return e
}

// wantStored checks a send result is "stored" with receipts from at least quorum replicas.
func wantStored(t *testing.T, what string, r wire.SendResponse, quorum int) {
	t.Helper()
	if len(r.Results) != 1 || r.Results[0].Status != wire.StatusStored || len(r.Results[0].Receipts) < quorum {
		t.Fatalf("%s: %+v, want stored with %d receipts", what, r.Results, quorum)
	}
}

// TestDeviceDroppingMidPushGetsEnvelopeFromMailboxOnceOnReconnect: bob is online on node 1 and is pushed an
// envelope from alice on node 0; his connection drops before he acknowledges it. Alice gets "stored" with a
// quorum of receipts, and when bob reconnects (to another node) his mailbox delivers the envelope, once: the
// next envelope after it is alice's next message.
func TestDeviceDroppingMidPushGetsEnvelopeFromMailboxOnceOnReconnect(t *testing.T) {
	nodes := gridtest.Swarm(t, 3, gridtest.InMemory())
	alice, bob := registerAccount(t, nodes[0]), registerAccount(t, nodes[1])
	ca := connect(t, nodes[0], alice.devs[0], gatewaytest.Options{})
	cb := connect(t, nodes[1], bob.devs[0], gatewaytest.Options{})
	waitLocated(t, nodes[0], nodes[1], bob.devs[0])

	ch, err := ca.StartSend(deliveryCtx(t), msgID(1), []byte("one"), bob.devs[0].ID())
	if err != nil {
		t.Fatal(err)
	}
	nextEnvelopeIs(t, cb, 1, "one")
	cb.Close() // the connection drops with the push unacknowledged
	r, err := gatewaytest.WaitSend(deliveryCtx(t), ch)
	if err != nil {
		t.Fatal(err)
	}
	wantStored(t, "send to a device that dropped mid-push", r, nodes[0].Mailbox().Limits().WriteQuorum)

	cb2 := connect(t, nodes[2], bob.devs[0], gatewaytest.Options{})
	fetchMailbox(t, cb2, bob.devs[0])
	if err := cb2.Ack(deliveryCtx(t), nextEnvelopeIs(t, cb2, 1, "one")); err != nil {
		t.Fatal(err)
	}
	waitLocated(t, nodes[0], nodes[2], bob.devs[0])
	sendLiveAndAck(t, ca, cb2, bob.devs[0], 2, "two") // the next envelope is not a second copy of message 1
}

// sendLiveAndAck sends message id from ca to dev, connected on cb, and checks that the next envelope cb gets is
// that message and that, acknowledged, it is reported delivered.
func sendLiveAndAck(t *testing.T, ca, cb *gatewaytest.Client, dev *e2ee.DeviceKeys, id int, ct string) {
	t.Helper()
	ch, err := ca.StartSend(deliveryCtx(t), msgID(id), []byte(ct), dev.ID())
	if err != nil {
		t.Fatal(err)
	}
	if err := cb.Ack(deliveryCtx(t), nextEnvelopeIs(t, cb, id, ct)); err != nil {
		t.Fatal(err)
	}
	r, err := gatewaytest.WaitSend(deliveryCtx(t), ch)
	if err != nil || r.Results[0].Status != wire.StatusDelivered {
		t.Fatalf("live send of message %d: %+v %v", id, r, err)
	}
}

// TestAckTimeoutIsStoredThenDeliveredOnce: bob, connected to node 1 with his mailbox delivery running, reads an
// envelope but does not acknowledge it within node 1's acknowledgement timeout. Alice gets "stored" with a
// quorum of receipts; the mailbox then pushes the envelope to bob again on the same connection, bob
// acknowledges it, and nothing more of it arrives: the next envelope is alice's next message.
func TestAckTimeoutIsStoredThenDeliveredOnce(t *testing.T) {
	nodes := gridtest.Swarm(t, 3, gridtest.InMemory(), gridtest.Configure(func(i int, cfg *node.Config) {
		if i == 1 {
			cfg.Delivery.WS.AckTimeout = time.Second
		}
	}))
	alice, bob := registerAccount(t, nodes[0]), registerAccount(t, nodes[1])
	ca := connect(t, nodes[0], alice.devs[0], gatewaytest.Options{})
	cb := connect(t, nodes[1], bob.devs[0], gatewaytest.Options{})
	fetchMailbox(t, cb, bob.devs[0])
	waitLocated(t, nodes[0], nodes[1], bob.devs[0])

	r, err := ca.Send(deliveryCtx(t), msgID(1), []byte("one"), bob.devs[0].ID())
	if err != nil {
		t.Fatal(err)
	}
	wantStored(t, "send that bob did not acknowledge in time", r, nodes[0].Mailbox().Limits().WriteQuorum)
	nextEnvelopeIs(t, cb, 1, "one") // the live push, never acknowledged
	fromMailbox := nextEnvelopeIs(t, cb, 1, "one")
	if err := cb.Ack(deliveryCtx(t), fromMailbox); err != nil {
		t.Fatal(err)
	}
	sendLiveAndAck(t, ca, cb, bob.devs[0], 2, "two") // the next envelope is not a third copy of message 1
}
