package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-datastore/query"

	"github.com/iagon/gridchat/client"
	"github.com/iagon/gridchat/client/store"
	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/e2ee/link"
	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/node"
	"github.com/iagon/gridchat/wire"
)

// grid is a real in-process swarm with clients on it.
type grid struct {
	t     *testing.T
	nodes []*node.Node
	ctx   context.Context
}

func newGrid(t *testing.T, n int) *grid {
	t.Helper()
	nodes := gridtest.Swarm(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return &grid{t: t, nodes: nodes, ctx: ctx}
}

func (g *grid) config(nodes ...int) client.Config {
	key := make([]byte, store.KeySize)
	rand.Read(key)
	cfg := client.Config{Dir: g.t.TempDir(), StoreKey: key, NoSync: true, DirectoryTTL: 300 * time.Millisecond,
		ResendInterval: 500 * time.Millisecond, MaxBackoff: time.Second,
		Logger: slog.New(slog.NewTextHandler(g.t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))}
	for _, i := range nodes {
		cfg.Gateways = append(cfg.Gateways, g.nodes[i].GatewayURL())
	}
	return cfg
}

func (g *grid) register(name string, nodes ...int) *client.Client {
	g.t.Helper()
	c, err := client.Register(g.ctx, g.config(nodes...), name)
	if err != nil {
		g.t.Fatalf("register %s: %v", name, err)
	}
	g.t.Cleanup(func() { c.Close() })
	if err := c.WaitConnected(g.ctx); err != nil {
		g.t.Fatal(err)
	}
	return c
}

// link adds a device to host's account, through the link protocol, connected to the given nodes.
func (g *grid) link(host *client.Client, kind link.Kind, nodes ...int) *client.Client {
	g.t.Helper()
	inv, err := host.InviteDevice(kind)
	if err != nil {
		g.t.Fatal(err)
	}
	ticket, err := client.ParseInvitation(inv.QRPayload, inv.ShortCode)
	if err != nil {
		g.t.Fatal(err)
	}
	hr, jr := g.gatewayRelays(host, inv, ticket)
	done := make(chan error, 1)
	go func() {
		_, err := host.HostLink(g.ctx, inv, hr)
		done <- err
	}()
	c, err := client.Link(g.ctx, g.config(nodes...), ticket, jr)
	if err != nil {
		g.t.Fatalf("link: %v (host: %v)", err, <-done)
	}
	if err := <-done; err != nil {
		g.t.Fatalf("host link: %v", err)
	}
	g.t.Cleanup(func() { c.Close() })
	if err := c.WaitConnected(g.ctx); err != nil {
		g.t.Fatal(err)
	}
	return c
}

// gatewayRelays opens inv's rendezvous on host's gateway and joins it there with ticket from a fresh,
// unauthenticated connection, as a new device does.
func (g *grid) gatewayRelays(host *client.Client, inv *client.Invitation, ticket link.Ticket) (*client.GatewayRelay, *client.GatewayRelay) {
	g.t.Helper()
	hr, err := host.HostRelay(g.ctx, inv)
	if err != nil {
		g.t.Fatalf("host relay: %v", err)
	}
	cfg := g.config()
	cfg.Gateways = []string{hr.Gateway()}
	jr, err := client.JoinRelay(g.ctx, cfg, ticket)
	if err != nil {
		g.t.Fatalf("join relay at %s: %v", hr.Gateway(), err)
	}
	return hr, jr
}

// waitTexts waits until c shows want as the texts of conv, in order.
func waitTexts(t *testing.T, c *client.Client, conv e2ee.ConversationID, want []string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var got []string
	for time.Now().Before(deadline) {
		got = texts(t, c, conv)
		if slices.Equal(got, want) {
			return
		}
		time.Sleep(20 * time.Millisecond) // polling the history with a deadline
	}
	t.Fatalf("device %s shows %d messages %q, want %d %q", c.Device().String()[:8], len(got), clip(got), len(want), clip(want))
}

func clip(s []string) []string {
	if len(s) > 6 {
		return append(slices.Clone(s[:3]), append([]string{"..."}, s[len(s)-3:]...)...)
	}
	return s
}

func texts(t *testing.T, c *client.Client, conv e2ee.ConversationID) []string {
	ms, err := c.Messages(conv)
	if err != nil && !errors.Is(err, client.ErrUnknownConversation) {
		t.Fatal(err)
	}
	var out []string
	for _, m := range ms {
		if m.Type == client.PayloadText {
			out = append(out, m.Text)
		}
	}
	return out
}

// scanForPlaintext fails if any node's datastore holds one of the secrets in a key or a value.
func (g *grid) scanForPlaintext(secrets ...string) {
	g.t.Helper()
	for i, nd := range g.nodes {
		res, err := nd.Datastore().Query(g.ctx, query.Query{})
		if err != nil {
			g.t.Fatal(err)
		}
		n := 0
		for r := range res.Next() {
			if r.Error != nil {
				g.t.Fatal(r.Error)
			}
			n++
			for _, s := range secrets {
				if bytes.Contains(r.Value, []byte(s)) || strings.Contains(r.Key, s) {
					g.t.Fatalf("node %d's datastore holds %q in clear under %s", i, s, r.Key)
				}
			}
		}
		res.Close()
		if n == 0 {
			g.t.Fatalf("node %d's datastore is empty: the scan proves nothing", i)
		}
	}
}

func mustDirect(t *testing.T, ctx context.Context, c *client.Client, who string) e2ee.ConversationID {
	t.Helper()
	cv, err := c.StartDirect(ctx, who)
	if err != nil {
		t.Fatalf("start direct with %s: %v", who, err)
	}
	return cv.ID
}

func send(t *testing.T, ctx context.Context, c *client.Client, conv e2ee.ConversationID, text string) {
	t.Helper()
	if _, err := c.SendText(ctx, conv, text); err != nil {
		t.Fatalf("send %q: %v", text, err)
	}
}

// Acceptance 1: Alice with two devices (nodes 1 and 2) and Bob (node 3) chat both ways; every device shows
// the whole conversation; no node holds any of it in clear.
func TestChatBothWaysReachesEveryDeviceAndNodesHoldOnlyCiphertext(t *testing.T) {
	g := newGrid(t, 3)
	alice1 := g.register("alice", 0)
	bob := g.register("bob", 2)
	alice2 := g.link(alice1, link.KindQR, 1)

	conv := mustDirect(t, g.ctx, alice1, "bob")
	msgs := []string{"hello bob, this is alice's phone", "hi alice, bob here", "and this is alice's laptop"}
	send(t, g.ctx, alice1, conv, msgs[0])
	waitTexts(t, bob, conv, msgs[:1])
	send(t, g.ctx, bob, conv, msgs[1])
	waitTexts(t, alice2, conv, msgs[:2])
	send(t, g.ctx, alice2, conv, msgs[2])
	for _, c := range []*client.Client{alice1, alice2, bob} {
		waitTexts(t, c, conv, msgs)
	}
	g.scanForPlaintext(msgs...)
}

func TestMain(m *testing.M) { gridtest.VerifyTestMain(m) }

// recordingRelay keeps every frame that passes, to check what a relay (a gateway) could see.
type recordingRelay struct {
	client.LinkRelay
	rec *recorded
}

// recorded is what the relays of one run sent.
type recorded struct {
	mu     sync.Mutex
	frames [][]byte
}

func (r recordingRelay) Send(ctx context.Context, f []byte) error {
	r.rec.mu.Lock()
	r.rec.frames = append(r.rec.frames, bytes.Clone(f))
	r.rec.mu.Unlock()
	return r.LinkRelay.Send(ctx, f)
}

// Acceptance 4: a third device links through the QR payload and a fourth through the typed short code; a wrong
// code fails on both sides, and nothing that crossed the relay reveals the invitation's secret.
func TestLinkingByQRAndShortCodeAndWrongCodeFails(t *testing.T) {
	g := newGrid(t, 2)
	alice1 := g.register("alice", 0)
	alice2 := g.link(alice1, link.KindShortCode, 1)
	alice3 := g.link(alice1, link.KindQR, 0)
	devs, _, err := alice3.Devices(g.ctx)
	if err != nil || len(devs) != 3 {
		t.Fatalf("alice has %d devices after two links (%v), want 3", len(devs), err)
	}
	_ = alice2

	// A wrong code: this invitation's rendezvous (the gateway pairs by it) with another invitation's secret.
	inv, err := alice1.InviteDevice(link.KindShortCode)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := alice1.InviteDevice(link.KindShortCode)
	wrong, err := client.ParseInvitation(nil, other.ShortCode)
	if err != nil {
		t.Fatal(err)
	}
	right, _ := client.ParseInvitation(nil, inv.ShortCode)
	wrong.Rendezvous = right.Rendezvous
	hr, jr := g.gatewayRelays(alice1, inv, wrong)
	// A third device that learnt the rendezvous cannot join the pair.
	cfg := g.config()
	cfg.Gateways = []string{hr.Gateway()}
	if _, err := client.JoinRelay(g.ctx, cfg, right); !errors.Is(err, wire.ErrLinkTaken) {
		t.Fatalf("third party joining the rendezvous: %v, want wire.ErrLinkTaken", err)
	}
	rec := &recorded{}
	done := make(chan error, 1)
	go func() {
		_, err := alice1.HostLink(g.ctx, inv, recordingRelay{hr, rec})
		done <- err
	}()
	_, jerr := client.Link(g.ctx, g.config(1), wrong, recordingRelay{jr, rec})
	if jerr != nil {
		// The host waits for the joiner's confirmation, which never comes: leaving the rendezvous ends its run.
		jr.Close()
	}
	herr := <-done
	frames := rec.frames
	// The joiner checks the host's confirmation first and aborts; the host's run ends without a device.
	if !errors.Is(jerr, link.ErrWrongCode) || herr == nil {
		t.Fatalf("wrong code: joiner %v, host %v; want link.ErrWrongCode and a failed run", jerr, herr)
	}
	for _, secret := range [][]byte{right.Password, wrong.Password, []byte(inv.ShortCode)} {
		for _, f := range frames {
			if bytes.Contains(f, secret) {
				t.Fatal("a relayed frame holds the code's secret")
			}
		}
		if strings.Contains(herr.Error(), string(secret)) || strings.Contains(jerr.Error(), string(secret)) {
			t.Fatal("an error message holds the code's secret")
		}
	}
	devs, _, _ = alice1.Devices(g.ctx)
	if len(devs) != 3 {
		t.Fatalf("a failed link changed the account: %d devices", len(devs))
	}
}

// Acceptance 6: the safety numbers of Alice and Bob match on all their devices, and change (on all of them,
// with a warning) when Bob links a device.
func TestSafetyNumbersMatchAndChangeWhenBobLinksADevice(t *testing.T) {
	g := newGrid(t, 2)
	alice1 := g.register("alice", 0)
	alice2 := g.link(alice1, link.KindQR, 1)
	bob1 := g.register("bob", 1)
	conv := mustDirect(t, g.ctx, alice1, "bob")
	send(t, g.ctx, alice1, conv, "hi")
	waitTexts(t, bob1, conv, []string{"hi"})
	waitTexts(t, alice2, conv, []string{"hi"})
	number := func(c *client.Client) string {
		n, err := c.SafetyNumber(g.ctx, conv)
		if err != nil {
			t.Fatal(err)
		}
		return n.Digits()
	}
	before := number(alice1)
	if len(before) != 60 || number(alice2) != before || number(bob1) != before {
		t.Fatalf("safety numbers differ between devices: %s / %s / %s", before, number(alice2), number(bob1))
	}
	// The QR payload of one side matches the other side.
	bn, _ := bob1.SafetyNumber(g.ctx, conv)
	if ok, err := alice1.VerifySafetyNumber(g.ctx, conv, bn.QRPayload()); !ok || err != nil {
		t.Fatalf("Bob's QR does not verify on Alice's phone: %v %v", ok, err)
	}

	bob2 := g.link(bob1, link.KindShortCode, 0)
	if _, err := bob1.SendHistory(g.ctx, bob2.Device()); err != nil {
		t.Fatal(err)
	}
	waitTexts(t, bob2, conv, []string{"hi"})
	after := number(alice1)
	if after == before {
		t.Fatal("safety number unchanged after Bob linked a device")
	}
	for _, c := range []*client.Client{alice2, bob1, bob2} {
		if n := number(c); n != after {
			t.Fatalf("after the link, device %s shows %s, want %s", c.Device().String()[:8], n, after)
		}
	}
	// Alice's phone warns: a safety-number change event names Bob.
	deadline := time.After(30 * time.Second)
	for {
		select {
		case ev := <-alice1.Events():
			if sn, ok := ev.(*client.SafetyNumberEvent); ok && sn.Account == bob1.Account() {
				return
			}
		case <-deadline:
			t.Fatal("no safety-number change event on Alice's phone")
		}
	}
}

// Acceptance 5: a revoked device receives nothing sent after the revocation is seen.
func TestRevokedDeviceReceivesNothingAfterRevocation(t *testing.T) {
	g := newGrid(t, 2)
	alice1 := g.register("alice", 0)
	alice2 := g.link(alice1, link.KindQR, 1)
	bob := g.register("bob", 1)
	conv := mustDirect(t, g.ctx, bob, "alice")
	send(t, g.ctx, bob, conv, "before revocation")
	waitTexts(t, alice2, conv, []string{"before revocation"})
	before, _ := bob.SafetyNumber(g.ctx, conv)

	if err := alice1.Revoke(g.ctx, alice2.Device()); err != nil {
		t.Fatal(err)
	}
	// Bob sees the revocation when his view of Alice's account changes.
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := bob.SafetyNumber(g.ctx, conv)
		if err == nil && n.Digits() != before.Digits() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Bob never saw the revocation")
		}
		time.Sleep(50 * time.Millisecond) // polling the directory with a deadline
	}
	drain(bob)
	send(t, g.ctx, bob, conv, "after revocation")
	waitTexts(t, alice1, conv, []string{"before revocation", "after revocation"})
	for _, st := range deliveryStatuses(t, bob) {
		if st.Device == alice2.Device() {
			t.Fatalf("the message after revocation was addressed to the revoked device (%s)", st.Status)
		}
	}
	if got := texts(t, alice2, conv); slices.Contains(got, "after revocation") {
		t.Fatal("the revoked device got the message sent after its revocation")
	}
}

func drain(c *client.Client) {
	for {
		select {
		case <-c.Events():
		default:
			return
		}
	}
}

// deliveryStatuses waits for the next delivery event of c.
func deliveryStatuses(t *testing.T, c *client.Client) []client.DeliveryStatus {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case ev := <-c.Events():
			if d, ok := ev.(*client.DeliveryEvent); ok {
				return d.Statuses
			}
		case <-deadline:
			t.Fatal("no delivery event")
		}
	}
}

// Acceptance 7: a backup on one device, restored on a fresh one with the passphrase alone, gives back the
// history; a wrong passphrase gives nothing.
func TestBackupRestoresHistoryWithPassphraseAlone(t *testing.T) {
	g := newGrid(t, 2)
	alice := g.register("alice", 0)
	bob := g.register("bob", 1)
	conv := mustDirect(t, g.ctx, alice, "bob")
	want := []string{"one", "two", "three"}
	for _, m := range want {
		send(t, g.ctx, alice, conv, m)
	}
	waitTexts(t, bob, conv, want)
	blobs := client.FileBlobStore{Dir: t.TempDir()}
	if err := alice.Backup(g.ctx, blobs, "correct horse battery staple"); err != nil {
		t.Fatal(err)
	}
	alice.Close()
	if _, err := client.Restore(g.ctx, g.config(1), blobs, "wrong passphrase"); err == nil {
		t.Fatal("restored with a wrong passphrase")
	}
	restored, err := client.Restore(g.ctx, g.config(1), blobs, "correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	defer restored.Close()
	if got := texts(t, restored, conv); !slices.Equal(got, want) {
		t.Fatalf("restored history %q, want %q", got, want)
	}
	// The restored device keeps chatting.
	if err := restored.WaitConnected(g.ctx); err != nil {
		t.Fatal(err)
	}
	send(t, g.ctx, restored, conv, "four")
	waitTexts(t, bob, conv, append(want, "four"))
}

// Acceptance 3: a group of 3 users with 2 devices each; messages reach all 6 devices; removing a member starts
// a new session that the removed member's devices are not part of, and they get none of the later messages.
func TestGroupOfSixDevicesAndRemovedMemberCannotReadLaterMessages(t *testing.T) {
	g := newGrid(t, 3)
	var devs []*client.Client
	for i, name := range []string{"alice", "bob", "carol"} {
		d1 := g.register(name, i)
		d2 := g.link(d1, link.KindQR, (i+1)%3)
		devs = append(devs, d1, d2)
	}
	alice, bob, carol := devs[0], devs[2], devs[4]
	cv, err := alice.CreateGroup(g.ctx, "trio", "bob", "carol")
	if err != nil {
		t.Fatal(err)
	}
	send(t, g.ctx, alice, cv.ID, "welcome to trio")
	send(t, g.ctx, bob, cv.ID, "thanks alice")
	for _, d := range devs {
		waitTexts(t, d, cv.ID, []string{"welcome to trio", "thanks alice"})
	}
	if err := alice.RemoveMember(g.ctx, cv.ID, "carol"); err != nil {
		t.Fatal(err)
	}
	// Bob's devices apply the new group state before Bob speaks again.
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := bob.Conversation(cv.ID)
		if err == nil && c.Group != nil && !c.Group.IsMember(carol.Account()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("bob never saw carol's removal")
		}
		time.Sleep(20 * time.Millisecond) // polling the conversation state with a deadline
	}
	drain(bob)
	send(t, g.ctx, bob, cv.ID, "carol is gone")
	for _, st := range deliveryStatuses(t, bob) {
		if st.Device == devs[4].Device() || st.Device == devs[5].Device() {
			t.Fatal("a message after the removal was addressed to a removed member's device")
		}
	}
	for _, d := range devs[:4] {
		waitTexts(t, d, cv.ID, []string{"welcome to trio", "thanks alice", "carol is gone"})
	}
	for _, d := range devs[4:] {
		if got := texts(t, d, cv.ID); slices.Contains(got, "carol is gone") {
			t.Fatal("a removed member's device shows a later message")
		}
	}
	// Carol can no longer speak in the group: the others refuse what she sends.
	if c, err := carol.Conversation(cv.ID); err == nil && c.Group != nil && c.Group.IsMember(carol.Account()) {
		_, _ = carol.SendText(g.ctx, cv.ID, "am I still here?")
	}
	send(t, g.ctx, alice, cv.ID, "final")
	waitTexts(t, bob, cv.ID, []string{"welcome to trio", "thanks alice", "carol is gone", "final"})
	g.scanForPlaintext("welcome to trio", "thanks alice", "carol is gone")
}

// Issue 14: a device linked after messages in three conversations gets their history through the grid, end
// to end encrypted; no node holds any of it in clear.
func TestLinkedDeviceGetsHistoryOfThreeConversations(t *testing.T) {
	g := newGrid(t, 2)
	alice := g.register("alice", 0)
	var want [][]string
	var convs []e2ee.ConversationID
	for i, name := range []string{"bob", "carol", "dave"} {
		peer := g.register(name, 1)
		conv := mustDirect(t, g.ctx, alice, name)
		var texts []string
		for j := range 5 {
			text := fmt.Sprintf("history %s %d", name, j)
			send(t, g.ctx, alice, conv, text)
			texts = append(texts, text)
		}
		waitTexts(t, peer, conv, texts)
		convs = append(convs, conv)
		want = append(want, texts)
		_ = i
	}
	alice2 := g.link(alice, link.KindQR, 1)
	n, err := alice.SendHistory(g.ctx, alice2.Device())
	if err != nil || n == 0 {
		t.Fatalf("send history: %d entries, %v", n, err)
	}
	for i, conv := range convs {
		waitTexts(t, alice2, conv, want[i])
	}
	var all []string
	for _, w := range want {
		all = append(all, w...)
	}
	g.scanForPlaintext(all...)
}
