package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/iagon/gridchat/e2ee/link"
	"github.com/iagon/gridchat/gateway/gatewaytest"
	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/linkrelay"
	"github.com/iagon/gridchat/node"
	"github.com/iagon/gridchat/wire"
)

// testClock is a settable clock for the link rendezvous.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// linkNode starts one node whose link rendezvous runs on clk, and a host device connected to it.
func linkNode(t *testing.T, clk *testClock, lim linkrelay.Limits) (*node.Node, *gatewaytest.Client) {
	t.Helper()
	nd := gridtest.Swarm(t, 1, gridtest.Configure(func(_ int, cfg *node.Config) {
		cfg.LinkRelay.Clock = clk.Now
		cfg.LinkRelay.Limits = lim
	}))[0]
	acct := registerAccount(t, nd)
	return nd, connect(t, nd, acct.devs[0], gatewaytest.Options{})
}

// dialJoiner opens an unauthenticated connection, as a new device without keys does.
func dialJoiner(t *testing.T, nd *node.Node) *gatewaytest.Client {
	t.Helper()
	c, err := gatewaytest.Dial(deliveryCtx(t), nd.WSURL(), gatewaytest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func linkOpen(ctx context.Context, c *gatewaytest.Client, rv []byte, role string) error {
	_, err := c.Call(ctx, linkrelay.OpOpen, linkrelay.OpenRequest{Rendezvous: rv, Role: role})
	return err
}

// pairRendezvous opens rendezvous rv on nd as host's, then dials a joiner (dialJoiner) and joins it there; it
// returns the joiner.
func pairRendezvous(t *testing.T, ctx context.Context, nd *node.Node, host *gatewaytest.Client, rv []byte) *gatewaytest.Client {
	t.Helper()
	if err := linkOpen(ctx, host, rv, linkrelay.RoleHost); err != nil {
		t.Fatal(err)
	}
	joiner := dialJoiner(t, nd)
	if err := linkOpen(ctx, joiner, rv, linkrelay.RoleJoin); err != nil {
		t.Fatal(err)
	}
	return joiner
}

func linkSend(ctx context.Context, c *gatewaytest.Client, rv, frame []byte) error {
	_, err := c.Call(ctx, linkrelay.OpSend, linkrelay.Frame{Rendezvous: rv, Frame: frame})
	return err
}

// nextFrame waits for the next link.frame push on c, for rendezvous rv.
func nextFrame(t *testing.T, c *gatewaytest.Client, rv []byte) []byte {
	t.Helper()
	ctx := deliveryCtx(t)
	for {
		select {
		case p, ok := <-c.Pushes():
			if !ok {
				t.Fatalf("connection ended waiting for a link frame: %v", c.Err())
			}
			if p.Name != linkrelay.PushFrame {
				continue
			}
			var f linkrelay.Frame
			if err := json.Unmarshal(p.Body, &f); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(f.Rendezvous, rv) {
				t.Fatalf("frame for rendezvous %x, want %x", f.Rendezvous, rv)
			}
			return f.Frame
		case <-ctx.Done():
			t.Fatal("no link frame")
		}
	}
}

// runLink runs the linking protocol between host and a joiner holding ticket, through the node, and returns
// the joiner's error (nil when both sides hold the channel and a data frame crossed each way).
func runLink(t *testing.T, host, joiner *gatewaytest.Client, h *link.Host, ticket link.Ticket) error {
	t.Helper()
	ctx := deliveryCtx(t)
	rv := h.Rendezvous()
	if err := linkOpen(ctx, joiner, ticket.Rendezvous, linkrelay.RoleJoin); err != nil {
		t.Fatalf("join: %v", err)
	}
	j, shareA, err := link.Join(ticket, link.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := linkSend(ctx, joiner, rv, shareA); err != nil {
		t.Fatalf("joiner send: %v", err)
	}
	shareB, err := h.Respond(nextFrame(t, host, rv))
	if err != nil {
		t.Fatalf("host respond: %v", err)
	}
	if err := linkSend(ctx, host, rv, shareB); err != nil {
		t.Fatalf("host send: %v", err)
	}
	jch, confirmA, err := j.Finish(nextFrame(t, joiner, rv))
	if err != nil {
		return err
	}
	if err := linkSend(ctx, joiner, rv, confirmA); err != nil {
		t.Fatal(err)
	}
	hch, err := h.Confirm(nextFrame(t, host, rv))
	if err != nil {
		t.Fatalf("host confirm: %v", err)
	}
	offer, _ := jch.Seal(link.PayloadDeviceOffer, []byte("device offer"))
	if err := linkSend(ctx, joiner, rv, offer); err != nil {
		t.Fatal(err)
	}
	if k, body, err := hch.Open(nextFrame(t, host, rv)); err != nil || k != link.PayloadDeviceOffer || string(body) != "device offer" {
		t.Fatalf("host open: %v %v %q", err, k, body)
	}
	done, _ := hch.Seal(link.PayloadDone, nil)
	if err := linkSend(ctx, host, rv, done); err != nil {
		t.Fatal(err)
	}
	if k, _, err := jch.Open(nextFrame(t, joiner, rv)); err != nil || k != link.PayloadDone {
		t.Fatalf("joiner open: %v %v", err, k)
	}
	return nil
}

func TestTwoWebSocketClientsLinkThroughOneNodeByQRAndShortCode(t *testing.T) {
	clk := &testClock{now: time.Now()}
	nd, host := linkNode(t, clk, linkrelay.Limits{})
	ctx := deliveryCtx(t)
	for _, kind := range []link.Kind{link.KindQR, link.KindShortCode} {
		h, err := link.NewHost(kind, link.Options{})
		if err != nil {
			t.Fatal(err)
		}
		var ticket link.Ticket
		if kind == link.KindQR {
			qr, _ := h.QRPayload()
			ticket, err = link.ParseQRPayload(qr)
		} else {
			code, _ := h.ShortCode()
			ticket, err = link.ParseShortCode(code)
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := linkOpen(ctx, host, h.Rendezvous(), linkrelay.RoleHost); err != nil {
			t.Fatalf("kind %d: host open: %v", kind, err)
		}
		joiner := dialJoiner(t, nd)
		if err := runLink(t, host, joiner, h, ticket); err != nil {
			t.Fatalf("kind %d: link: %v", kind, err)
		}
		// The joiner leaves: the rendezvous goes with it.
		joiner.Close()
		waitRendezvous(t, nd, 0)
	}
}

func TestLinkWithAWrongCodeFailsAtTheJoiner(t *testing.T) {
	clk := &testClock{now: time.Now()}
	nd, host := linkNode(t, clk, linkrelay.Limits{})
	h, _ := link.NewHost(link.KindShortCode, link.Options{})
	code, _ := h.ShortCode()
	right, _ := link.ParseShortCode(code)
	other, _ := link.NewHost(link.KindShortCode, link.Options{})
	otherCode, _ := other.ShortCode()
	wrong, _ := link.ParseShortCode(otherCode)
	wrong.Rendezvous = right.Rendezvous // the right rendezvous, a wrong secret
	if err := linkOpen(deliveryCtx(t), host, h.Rendezvous(), linkrelay.RoleHost); err != nil {
		t.Fatal(err)
	}
	if err := runLink(t, host, dialJoiner(t, nd), h, wrong); !errors.Is(err, link.ErrWrongCode) {
		t.Fatalf("wrong code: %v, want link.ErrWrongCode", err)
	}
}

func TestLinkRendezvousRefusesAThirdPartyAndAnUnauthenticatedHost(t *testing.T) {
	clk := &testClock{now: time.Now()}
	// A frame cap below the WebSocket frame limit, to see the rendezvous' own cap (the default,
	// link.MaxFrameSize, is above what one WebSocket frame carries).
	const maxFrame = 4096
	const maxFrames = 6
	nd, host := linkNode(t, clk, linkrelay.Limits{MaxFrameBytes: maxFrame, MaxFrames: maxFrames})
	ctx := deliveryCtx(t)
	rv := []byte("ABCDE")
	joiner, third := dialJoiner(t, nd), dialJoiner(t, nd)
	if err := linkOpen(ctx, third, rv, linkrelay.RoleHost); !errors.Is(err, wire.ErrUnauthenticated) {
		t.Fatalf("unauthenticated host: %v, want unauthenticated", err)
	}
	if err := linkOpen(ctx, joiner, rv, linkrelay.RoleJoin); !errors.Is(err, wire.ErrNotFound) {
		t.Fatalf("join before the host: %v, want not_found", err)
	}
	if err := linkOpen(ctx, host, rv, linkrelay.RoleHost); err != nil {
		t.Fatal(err)
	}
	if err := linkOpen(ctx, host, rv, linkrelay.RoleHost); !errors.Is(err, wire.ErrLinkTaken) {
		t.Fatalf("second host: %v, want link_taken", err)
	}
	if err := linkOpen(ctx, joiner, rv, linkrelay.RoleJoin); err != nil {
		t.Fatal(err)
	}
	err := linkOpen(ctx, third, rv, linkrelay.RoleJoin)
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeLinkTaken || we.Reason != "link_taken" {
		t.Fatalf("third party: %v, want code 18 link_taken", err)
	}
	// The third party can neither send into the rendezvous nor read from it.
	if err := linkSend(ctx, third, rv, []byte{1}); !errors.Is(err, wire.ErrNotFound) {
		t.Fatalf("third party send: %v, want not_found", err)
	}
	if err := linkSend(ctx, joiner, rv, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if f := nextFrame(t, host, rv); string(f) != "hi" {
		t.Fatalf("host got %q", f)
	}
	select {
	case p := <-third.Pushes():
		if p.Name == linkrelay.PushFrame {
			t.Fatal("the third party received a link frame")
		}
	default:
	}
	// Frames over the cap are refused.
	if err := linkSend(ctx, host, rv, make([]byte, maxFrame)); err != nil {
		t.Fatalf("frame at the cap: %v", err)
	}
	nextFrame(t, joiner, rv)
	if err := linkSend(ctx, host, rv, make([]byte, maxFrame+1)); !errors.Is(err, wire.ErrTooLarge) {
		t.Fatalf("oversized frame: %v, want too_large", err)
	}
	// A rendezvous carries at most maxFrames frames (two so far), then closes.
	for i := 2; i < maxFrames; i++ {
		if err := linkSend(ctx, joiner, rv, []byte{byte(i)}); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	if err := linkSend(ctx, joiner, rv, []byte("one too many")); !errors.Is(err, wire.ErrTooLarge) {
		t.Fatalf("frame over the rendezvous' budget: %v, want too_large", err)
	}
	if err := linkSend(ctx, host, rv, []byte("after")); !errors.Is(err, wire.ErrNotFound) {
		t.Fatalf("send after the budget closed the rendezvous: %v, want not_found", err)
	}
}

func TestLinkRendezvousExpiresUnpairedAndIdleAndDropsOnDisconnect(t *testing.T) {
	clk := &testClock{now: time.Now()}
	nd, host := linkNode(t, clk, linkrelay.Limits{})
	ctx := deliveryCtx(t)

	// Unpaired for the TTL: gone.
	if err := linkOpen(ctx, host, []byte("UNPAIRED"), linkrelay.RoleHost); err != nil {
		t.Fatal(err)
	}
	clk.Advance(link.DefaultLifetime)
	nd.LinkRelay().Sweep()
	if n := nd.LinkRelay().Len(); n != 0 {
		t.Fatalf("%d rendezvous after the TTL and a sweep, want 0", n)
	}
	if err := linkOpen(ctx, dialJoiner(t, nd), []byte("UNPAIRED"), linkrelay.RoleJoin); !errors.Is(err, wire.ErrNotFound) {
		t.Fatalf("join after expiry: %v, want not_found", err)
	}

	// Paired, then idle for the TTL: frames no longer pass.
	rv := []byte("IDLE-RENDEZVOUS!")
	joiner := pairRendezvous(t, ctx, nd, host, rv)
	clk.Advance(link.DefaultLifetime - time.Second)
	if err := linkSend(ctx, joiner, rv, []byte("still here")); err != nil {
		t.Fatalf("send within the TTL: %v", err)
	}
	nextFrame(t, host, rv)
	clk.Advance(link.DefaultLifetime)
	if err := linkSend(ctx, joiner, rv, []byte("too late")); !errors.Is(err, wire.ErrNotFound) {
		t.Fatalf("send after idle expiry: %v, want not_found", err)
	}
	waitRendezvous(t, nd, 0)

	// The host disconnects: its rendezvous goes.
	rv2 := []byte("HOSTLEAVES")
	joiner2 := pairRendezvous(t, ctx, nd, host, rv2)
	host.Close()
	waitRendezvous(t, nd, 0)
	if reason := nextClosed(t, joiner2, rv2); reason != "disconnected" {
		t.Fatalf("link.closed reason %q, want disconnected", reason)
	}
	if err := linkSend(ctx, joiner2, rv2, []byte("anyone?")); !errors.Is(err, wire.ErrNotFound) {
		t.Fatalf("send after the host left: %v, want not_found", err)
	}
}

func TestLinkOpensAreRateLimitedPerConnection(t *testing.T) {
	clk := &testClock{now: time.Now()}
	nd, _ := linkNode(t, clk, linkrelay.Limits{})
	ctx := deliveryCtx(t)
	c := dialJoiner(t, nd)
	burst := linkrelay.DefaultLimits().OpenBurst
	for i := range burst {
		if err := linkOpen(ctx, c, []byte("NOPE0"), linkrelay.RoleJoin); !errors.Is(err, wire.ErrNotFound) {
			t.Fatalf("open %d: %v, want not_found", i, err)
		}
	}
	if err := linkOpen(ctx, c, []byte("NOPE0"), linkrelay.RoleJoin); !errors.Is(err, wire.ErrRateLimited) {
		t.Fatalf("open over the burst: %v, want rate_limited", err)
	}
	// Another connection has its own budget; time refills this one's.
	if err := linkOpen(ctx, dialJoiner(t, nd), []byte("NOPE0"), linkrelay.RoleJoin); !errors.Is(err, wire.ErrNotFound) {
		t.Fatalf("other connection: %v, want not_found", err)
	}
	clk.Advance(time.Minute)
	if err := linkOpen(ctx, c, []byte("NOPE0"), linkrelay.RoleJoin); !errors.Is(err, wire.ErrNotFound) {
		t.Fatalf("after a minute: %v, want not_found", err)
	}
}

// waitRendezvous waits until nd holds n link rendezvous (connection ends are processed asynchronously).
func waitRendezvous(t *testing.T, nd *node.Node, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for nd.LinkRelay().Len() != n {
		if time.Now().After(deadline) {
			t.Fatalf("node holds %d link rendezvous, want %d", nd.LinkRelay().Len(), n)
		}
		time.Sleep(10 * time.Millisecond) // polling a count the connection's goroutine updates, with a deadline
	}
}

// nextClosed waits for the link.closed push of rendezvous rv on c and returns its reason.
func nextClosed(t *testing.T, c *gatewaytest.Client, rv []byte) string {
	t.Helper()
	ctx := deliveryCtx(t)
	for {
		select {
		case p, ok := <-c.Pushes():
			if !ok {
				t.Fatalf("connection ended waiting for link.closed: %v", c.Err())
			}
			if p.Name != linkrelay.PushClosed {
				continue
			}
			var cl linkrelay.Closed
			if err := json.Unmarshal(p.Body, &cl); err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(cl.Rendezvous, rv) {
				return cl.Reason
			}
		case <-ctx.Done():
			t.Fatal("no link.closed push")
		}
	}
}
