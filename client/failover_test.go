package client_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iagon/gridchat/client"
	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/node"
	"github.com/iagon/gridchat/relay"
	"github.com/iagon/gridchat/wire"
)

// stallProxy forwards TCP connections on 127.0.0.1 to one target until it is stalled: from then on it forwards
// nothing either way and closes nothing, as a network path that dies silently (a NAT that forgot the mapping,
// a Wi-Fi that went away) looks to both ends.
type stallProxy struct {
	ln      net.Listener
	target  string
	stalled atomic.Bool
	armed   atomic.Bool // stall when the client next sends something, and drop that
	mu      sync.Mutex
	conns   []net.Conn
	wg      sync.WaitGroup
}

func newStallProxy(t *testing.T, target string) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, target: target}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

func (p *stallProxy) addr() string { return p.ln.Addr().String() }

func (p *stallProxy) accept() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		p.wg.Go(func() { p.pipe(out, in, true) })
		p.wg.Go(func() { p.pipe(in, out, false) })
	}
}

// pipe copies src to dst while the proxy is not stalled; once stalled, what arrives is dropped and an end of
// src is not passed on. up says src is the client.
func (p *stallProxy) pipe(dst, src net.Conn, up bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && up && p.armed.Load() {
			p.stalled.Store(true)
		}
		if n > 0 && !p.stalled.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) && !p.stalled.Load() {
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
				}
			}
			return
		}
	}
}

func (p *stallProxy) stall() { p.stalled.Store(true) }

// stallOnNextSend stalls the path when the client next sends something (that frame is lost too).
func (p *stallProxy) stallOnNextSend() { p.armed.Store(true) }

func (p *stallProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// waitLocations polls until from's presence lists exactly the gateways of want for dev, newest first, none of
// them superseded but the older ones (an empty want: the device is not online anywhere).
func waitLocations(t *testing.T, from *node.Node, dev e2ee.DeviceID, want ...*node.Node) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		locs, err := from.Presence().Locations(context.Background(), wire.DeviceID(dev))
		ok := len(locs) == len(want) && (len(want) > 0 || errors.Is(err, relay.ErrNotOnline))
		for i := range want {
			ok = ok && locs[i].Gateway == want[i].ID() && locs[i].Superseded == (i > 0)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s locates device %s at %v (%v), want %d gateways", from.ID(), dev.String()[:8], locs, err, len(want))
		}
		time.Sleep(20 * time.Millisecond) // polling the presence cache with a deadline
	}
}

// deliveryOf waits for c's delivery event of message seq in conv.
func deliveryOf(t *testing.T, c *client.Client, conv e2ee.ConversationID, seq uint64) []client.DeliveryStatus {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case ev := <-c.Events():
			if d, ok := ev.(*client.DeliveryEvent); ok && d.Conversation == conv && d.Seq == seq {
				return d.Statuses
			}
		case <-deadline:
			t.Fatalf("no delivery event for message %d", seq)
		}
	}
}

// counter returns the sum of a metric's series on nd (0 when it has none yet).
func counter(t *testing.T, nd *node.Node, name string) float64 {
	t.Helper()
	mfs, err := nd.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestSilentlyDeadGatewayConnectionIsLeftAndDeviceStaysReachable: Bob's device is connected to node 0 through a
// path that dies silently: nothing arrives either way and no side closes it. Bob's client must notice (its ping
// goes unanswered), move to node 1 and publish a fresh presence record there at once, so that a send from Alice
// on node 2 is delivered live through node 1, neither stored in the mailbox nor copied there. When node 0 notices
// too (its own pings, here after 1 s) it publishes Bob's offline record, which withdraws node 0 alone: Bob is
// located at node 1 only. While node 0 still holds the dead connection (its default 60 s), its record stays
// listed but superseded, behind node 1. A client that waits for the dead connection to report an error never
// moves: Bob is offline once node 0 withdraws, and before that sends go to node 0 and end in the mailbox.
func TestSilentlyDeadGatewayConnectionIsLeftAndDeviceStaysReachable(t *testing.T) {
	for _, tc := range []struct {
		name        string
		idleTimeout time.Duration // node 0's; zero is the default
		withdrawn   bool          // whether node 0 notices within the test and withdraws its gateway
		duringAck   bool          // the path dies as Bob acknowledges a message: Bob's ack waits for an answer
	}{
		{name: "old gateway withdraws", idleTimeout: time.Second, withdrawn: true},
		{name: "old gateway still holds the connection"},
		{name: "path dies under an ack", duringAck: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := gridtest.Swarm(t, 3, gridtest.InMemory(), gridtest.Configure(func(i int, cfg *node.Config) {
				if i == 0 && tc.idleTimeout > 0 {
					cfg.Delivery.WS.PingInterval = tc.idleTimeout / 5
					cfg.Delivery.WS.IdleTimeout = tc.idleTimeout
				}
			}))
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			t.Cleanup(cancel)
			g := &grid{t: t, nodes: nodes, ctx: ctx}
			u, err := url.Parse(nodes[0].GatewayURL())
			if err != nil {
				t.Fatal(err)
			}
			path := newStallProxy(t, u.Host)

			alice := g.register("alice", 2)
			cfg := g.config()
			cfg.Gateways = []string{path.addr(), nodes[1].GatewayURL()}
			cfg.PingInterval = 300 * time.Millisecond
			bob, err := client.Register(ctx, cfg, "bob")
			if err != nil {
				t.Fatalf("register bob: %v", err)
			}
			t.Cleanup(func() { bob.Close() })
			if err := bob.WaitConnected(ctx); err != nil {
				t.Fatal(err)
			}
			conv := mustDirect(t, ctx, alice, "bob")
			send(t, ctx, alice, conv, "before")
			waitTexts(t, bob, conv, []string{"before"})
			waitLocations(t, nodes[2], bob.Device(), nodes[0])

			want := []string{"before"}
			start := time.Now()
			lost := make(chan error, 1)
			if tc.duringAck {
				// Node 0 pushes the message to Bob; his ack is lost with the path, so node 0 stores the message
				// in the mailbox after its ack timeout (10 s), and Bob's client waits for the ack's answer.
				path.stallOnNextSend()
				go func() {
					_, err := alice.SendText(ctx, conv, "ack lost")
					lost <- err
				}()
				want = append(want, "ack lost")
				waitTexts(t, bob, conv, want)
				for !path.stalled.Load() {
					time.Sleep(time.Millisecond) // polling the proxy; Bob's ack is on its way
				}
				start = time.Now()
			} else {
				lost <- nil
				path.stall()
			}
			if tc.withdrawn {
				waitLocations(t, nodes[2], bob.Device(), nodes[1])
				// Node 0 withdrew itself too: its own cache agrees.
				waitLocations(t, nodes[0], bob.Device(), nodes[1])
			} else {
				waitLocations(t, nodes[2], bob.Device(), nodes[1], nodes[0])
			}
			took := time.Since(start)
			t.Logf("located as expected %v after the path to node 0 died", took)
			// 2.5 × PingInterval to give up the connection, then a reconnect and gossip; waiting for anything
			// else (an ack's 30 s call timeout) would take longer.
			if took > 10*time.Second {
				t.Fatalf("the client took %v to leave the dead path", took)
			}
			if err := <-lost; err != nil {
				t.Fatal(err)
			}

			copies := counter(t, nodes[2], "gridchat_relay_mailbox_copies_total")
			seq, err := alice.SendText(ctx, conv, "after")
			if err != nil {
				t.Fatal(err)
			}
			for _, st := range deliveryOf(t, alice, conv, seq) {
				if st.Device == bob.Device() && st.Status != wire.StatusDelivered {
					t.Fatalf("send to bob after the path to node 0 died: %s %s, want delivered", st.Status, st.Reason)
				}
			}
			waitTexts(t, bob, conv, append(want, "after"))
			if n := counter(t, nodes[2], "gridchat_relay_mailbox_copies_total"); n != copies {
				t.Fatalf("the send through node 1 was also copied to the mailbox (%v copies)", n-copies)
			}
		})
	}
}
