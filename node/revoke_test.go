package node_test

import (
	"testing"
	"time"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/gateway"
	"github.com/iagon/gridchat/gateway/gatewaytest"
	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/wire"
)

func TestRevokingADeviceDropsItsMailboxCutsItsConnectionAndRefusesEnvelopes(t *testing.T) {
	nodes := gridtest.Swarm(t, 3)
	ctx := deliveryCtx(t)
	bob := registerAccount(t, nodes[0])
	phone := bob.devs[0]
	laptop := bob.linkDevice(t, nodes[0])
	alice := registerAccount(t, nodes[2])
	sender := connect(t, nodes[2], alice.devs[0], gatewaytest.Options{})

	// The phone is offline: the envelope waits in its mailbox.
	resp, err := sender.Send(ctx, msgID(1), []byte("for the phone"), phone.ID())
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Results[0]; got.Status != wire.StatusStored {
		t.Fatalf("send to the offline phone: %+v, want stored", got)
	}
	dev := wire.DeviceID(phone.ID())
	replicas, err := nodes[0].Mailbox().Replicas(ctx, dev)
	if err != nil || len(replicas) == 0 {
		t.Fatalf("replicas of the phone's mailbox: %v %v", replicas, err)
	}
	held := 0
	for _, nd := range nodes {
		n, err := nd.Mailbox().Store().Count(ctx, dev)
		if err != nil {
			t.Fatal(err)
		}
		held += n
	}
	if held == 0 {
		t.Fatal("no replica holds the phone's envelope")
	}

	// The phone comes online on node 1; the laptop revokes it through node 2.
	phoneConn := connect(t, nodes[0], phone, gatewaytest.Options{})
	now := time.Now()
	if _, err := bob.chain.Append(laptop, &e2ee.RevokeDevice{Device: phone.ID()}, now); err != nil {
		t.Fatal(err)
	}
	if _, err := nodes[1].Directory().Append(ctx, bob.chain.Encode()); err != nil {
		t.Fatalf("revoke: %v", err)
	}

	select {
	case <-phoneConn.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the revoked phone's connection on node 1 is still open after 10 s")
	}
	if code := phoneConn.CloseStatus(ctx); code != gateway.CloseRevoked {
		t.Fatalf("connection closed with %d, want %d (revoked)", code, gateway.CloseRevoked)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, nd := range nodes {
		for {
			revoked, err := nd.Mailbox().Store().Revoked(ctx, dev)
			if err != nil {
				t.Fatal(err)
			}
			n, err := nd.Mailbox().Store().Count(ctx, dev)
			if err != nil {
				t.Fatal(err)
			}
			if revoked && n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %s still holds %d envelopes of the revoked phone (revoked mark: %v)", nd.ID(), n, revoked)
			}
			time.Sleep(20 * time.Millisecond) // polling gossip, with a deadline
		}
	}

	// An envelope sent to the phone now is refused as revoked; the laptop still gets its own.
	resp, err = sender.Send(ctx, msgID(2), []byte("too late"), phone.ID(), laptop.ID())
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Results[0]; got.Status != wire.StatusFailed || got.Code != wire.CodeRevoked || got.Reason != wire.FailRevoked {
		t.Fatalf("send to the revoked phone: %+v, want failed/revoked", got)
	}
	if got := resp.Results[1]; got.Status != wire.StatusStored {
		t.Fatalf("send to the laptop: %+v, want stored", got)
	}
}
