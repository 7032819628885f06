package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/gateway/gatewaytest"
	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/keyregistry"
	"github.com/iagon/gridchat/node"
	"github.com/iagon/gridchat/wire"
)

// TestClosingBusyNodesNeverTouchesAClosedDatastore closes a swarm on Pebble datastores again and again while
// envelopes are in flight: live deliveries, envelopes for an offline device being written to its mailbox
// replicas, registrations waiting for their receipts, and every service's loops running. Pebble panics on any
// use of a closed database, which would kill the test binary; the node's datastore also counts every operation
// that arrives after Close closed it, and that count must stay zero (each service stopped and waited for its
// writers before the datastore closed).
func TestClosingBusyNodesNeverTouchesAClosedDatastore(t *testing.T) {
	const rounds = 4
	for round := range rounds {
		t.Run(fmt.Sprint("round ", round), func(t *testing.T) {
			nodes := gridtest.Swarm(t, 3)
			alice, bob, carol := registerAccount(t, nodes[0]), registerAccount(t, nodes[1]), registerAccount(t, nodes[2])
			ca := connect(t, nodes[0], alice.devs[0], gatewaytest.Options{})
			cc := connect(t, nodes[2], carol.devs[0], gatewaytest.Options{})
			waitLocated(t, nodes[0], nodes[2], carol.devs[0])

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var traffic sync.WaitGroup
			stored := make(chan struct{})
			traffic.Go(func() {
				// Alternate a live recipient (carol) and an offline one (bob, whose envelopes go to mailboxes),
				// without waiting for outcomes, until the nodes close under the sender.
				var once sync.Once
				for i := 0; ctx.Err() == nil; i++ {
					to := carol.devs[0].ID()
					if i%2 == 1 {
						to = bob.devs[0].ID()
					}
					ch, err := ca.StartSend(ctx, msgID(i), []byte("payload"), to)
					if err != nil {
						return
					}
					if i == 1 {
						// Close only once the mailboxes have been written to at least once.
						if r, err := gatewaytest.WaitSend(ctx, ch); err == nil && r.Results[0].Status == wire.StatusStored {
							once.Do(func() { close(stored) })
						}
					}
					if i > 1 {
						once.Do(func() { close(stored) })
					}
				}
			})
			traffic.Go(func() {
				for ctx.Err() == nil {
					e, err := cc.NextEnvelope(ctx)
					if err != nil {
						return
					}
					_ = cc.Ack(ctx, e)
				}
			})
			traffic.Go(func() {
				// Registrations keep the key directory publishing and waiting for receipts.
				for i := 0; ctx.Err() == nil && i < 20; i++ {
					if !tryRegister(ctx, nodes[i%len(nodes)]) {
						return
					}
				}
			})
			select {
			case <-stored:
			case <-time.After(30 * time.Second):
				t.Fatal("no envelope was stored in a mailbox within 30s")
			}
			// Vary what is in flight when Close comes (not a synchronisation: any moment must be safe).
			time.Sleep(time.Duration(round) * 50 * time.Millisecond)

			var closing sync.WaitGroup
			for i, nd := range nodes {
				closing.Go(func() {
					if err := nd.Close(); err != nil {
						t.Errorf("close node %d: %v", i, err)
					}
				})
			}
			closing.Wait()
			cancel()
			ca.Close()
			cc.Close()
			traffic.Wait()
			for i, nd := range nodes {
				// Requests from peers served by kad-dht's handlers (owner "dht") run on the host's goroutines,
				// which no Close can wait for; they are refused, not counted here.
				if n := lateOps(t, nd, "service"); n != 0 {
					t.Errorf("node %d: %v datastore operations of its services arrived after its datastore closed", i, n)
				}
			}
		})
	}
}

// lateOps returns the node's count of datastore operations refused after close, for one owner.
func lateOps(t *testing.T, nd *node.Node, owner string) float64 {
	t.Helper()
	return labelledCounter(t, nd, "gridchat_datastore_after_close_total", "owner", owner)
}

// tryRegister registers a fresh account with one device over a WebSocket to nd, as a client does, and reports
// whether the node still answered (Close cuts registrations short).
func tryRegister(ctx context.Context, nd *node.Node) bool {
	now := time.Now()
	dev, err := e2ee.NewDeviceKeys(now)
	if err != nil {
		return false
	}
	chain, err := e2ee.NewAccount(dev, now)
	if err != nil {
		return false
	}
	c, err := gatewaytest.Dial(ctx, nd.WSURL(), gatewaytest.Options{})
	if err != nil {
		return false
	}
	defer c.Close()
	raw, err := c.Call(ctx, keyregistry.OpNonce, keyregistry.NonceRequest{Device: dev.Public().Encode()})
	if err != nil {
		return false
	}
	var grant keyregistry.NonceResponse
	if err := json.Unmarshal(raw, &grant); err != nil {
		return false
	}
	gw := []byte(nd.ID())
	proof, err := e2ee.SignRegistration(dev, gw, grant.Nonce, now)
	if err != nil {
		return false
	}
	ans, err := dev.AnswerKeyChallenge(gw, grant.Nonce, grant.Challenge)
	if err != nil {
		return false
	}
	_, err = c.Call(ctx, keyregistry.OpRegister, keyregistry.RegisterBody{
		Nonce: grant.Nonce, Chain: chain.Encode(), Proof: proof.Encode(), Answer: ans})
	return err == nil
}
