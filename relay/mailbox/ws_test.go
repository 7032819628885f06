package mailbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/gateway/gatewaytest"
	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/keyregistry"
	"github.com/iagon/gridchat/node"
	"github.com/iagon/gridchat/relay/mailbox"
	"github.com/iagon/gridchat/wire"
)

// register registers a new account with one device through nd's key directory and returns the device.
func register(t testing.TB, nd *node.Node) *e2ee.DeviceKeys {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	now := time.Now()
	dev := newDevice(t)
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
	if _, err := nd.Directory().Register(ctx, conn, keyregistry.RegisterRequest{
		Nonce: grant.Nonce, Chain: chain.Encode(), Proof: proof.Encode(), Answer: ans}); err != nil {
		t.Fatalf("register: %v", err)
	}
	return dev
}

// connectWS opens a WebSocket to nd and authenticates as dev, retrying while nd's directory has not yet learnt
// the device from the grid.
func connectWS(t testing.TB, ctx context.Context, nd *node.Node, dev *e2ee.DeviceKeys) *gatewaytest.Client {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := gatewaytest.Dial(ctx, nd.WSURL(), gatewaytest.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err = c.Auth(ctx, dev); err == nil {
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

func fetchOp(t testing.TB, ctx context.Context, c *gatewaytest.Client, dev *e2ee.DeviceKeys) node.MailboxFetchResponse {
	t.Helper()
	r, err := mailbox.NewFetchRequest(dev, true, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := c.Call(ctx, node.OpMailboxFetch, node.MailboxFetchRequest{DevicePublic: r.DevicePublic, Request: r.Request, Body: r.Body})
	if err != nil {
		t.Fatalf("mailbox.fetch: %v", err)
	}
	var resp node.MailboxFetchResponse
	if err := json.Unmarshal(raw, &resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestWebSocketDeviceConnectingToAnotherNodeReceivesHundredInOrderOnce(t *testing.T) {
	nodes := gridtest.Swarm(t, 5, noLoops())
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	a := register(t, nodes[0])
	b := register(t, nodes[0])
	ca := connectWS(t, ctx, nodes[0], a)
	// B is offline: every send is stored in its mailbox.
	for i := range 100 {
		id := make([]byte, 16)
		copy(id, fmt.Sprintf("msg-%06d", i))
		res, err := ca.Send(ctx, id, fmt.Appendf(nil, "ciphertext %06d", i), b.ID())
		if err != nil {
			t.Fatal(err)
		}
		if st := res.Results[0].Status; st != wire.StatusStored {
			t.Fatalf("send %d: status %q (%+v)", i, st, res.Results[0])
		}
	}
	// B connects to node 4 and asks for its mailbox.
	cb := connectWS(t, ctx, nodes[3], b)
	if resp := fetchOp(t, ctx, cb, b); len(resp.Tombstones) != 0 {
		t.Fatalf("tombstones %+v", resp.Tombstones)
	}
	for i := range 100 {
		e, err := cb.NextEnvelope(ctx)
		if err != nil {
			t.Fatalf("after %d envelopes: %v", i, err)
		}
		if want := fmt.Sprintf("ciphertext %06d", i); string(e.Ciphertext) != want {
			t.Fatalf("envelope %d is %q: out of order or duplicated", i, e.Ciphertext)
		}
		if aid := did(a); string(e.SenderDevice) != string(aid[:]) {
			t.Fatal("wrong sender")
		}
		if err := cb.Ack(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	// Nothing is delivered twice.
	short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancelShort()
	if e, err := cb.NextEnvelope(short); err == nil {
		t.Fatalf("extra envelope %q", e.Ciphertext)
	}
	// Afterwards no replica holds any (deletes follow the acknowledgements; poll with a deadline).
	deadline := time.Now().Add(30 * time.Second)
	for {
		c := copies(t, nodes, did(b))
		if slices.Max(c) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas still hold %v", c)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWebSocketDeviceComingOnlineWhileSenderSendsGetsEverythingOnce(t *testing.T) {
	nodes := gridtest.Swarm(t, 4, noLoops())
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	a := register(t, nodes[0])
	b := register(t, nodes[0])
	ca := connectWS(t, ctx, nodes[0], a)
	const total = 300
	started := make(chan struct{})
	sent := make(chan error, 1)
	var stored, live atomic.Int64
	go func() {
		for i := range total {
			if i == 50 {
				close(started)
			}
			id := make([]byte, 16)
			copy(id, fmt.Sprintf("msg-%06d", i))
			res, err := ca.Send(ctx, id, fmt.Appendf(nil, "ciphertext %06d", i), b.ID())
			if err != nil {
				sent <- err
				return
			}
			switch res.Results[0].Status {
			case wire.StatusStored:
				stored.Add(1)
			case wire.StatusDelivered:
				live.Add(1)
			default:
				sent <- fmt.Errorf("send %d: %+v", i, res.Results[0])
				return
			}
		}
		sent <- nil
	}()
	<-started
	cb := connectWS(t, ctx, nodes[3], b)
	fetchOp(t, ctx, cb, b)
	seen := make(map[string]int)
	for len(seen) < total {
		e, err := cb.NextEnvelope(ctx)
		if err != nil {
			t.Fatalf("after %d envelopes: %v", len(seen), err)
		}
		seen[string(e.Ciphertext)]++
		if seen[string(e.Ciphertext)] > 1 {
			t.Fatalf("%q delivered twice", e.Ciphertext)
		}
		if err := cb.Ack(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d envelopes went through the mailbox, %d were delivered live", stored.Load(), live.Load())
	short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancelShort()
	if e, err := cb.NextEnvelope(short); err == nil {
		t.Fatalf("extra envelope %q", e.Ciphertext)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c := copies(t, nodes, did(b))
		if slices.Max(c) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas still hold %v", c)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
