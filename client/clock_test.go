package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iagon/gridchat/client"
	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/e2ee/link"
)

// publishedKey waits until the directory, asked through node i's gateway, serves dev's signed messaging key.
func (g *grid) publishedKey(i int, dev e2ee.DeviceID) *e2ee.SignedMessagingKey {
	g.t.Helper()
	url := fmt.Sprintf("%s/v1/devices/%s/key", g.nodes[i].GatewayURL(), dev)
	deadline := time.Now().Add(30 * time.Second)
	for {
		k, err := getKey(g.ctx, url)
		if err == nil {
			return k
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("the directory serves no messaging key of %s: %v", dev, err)
		}
		time.Sleep(50 * time.Millisecond) // polling the directory with a deadline
	}
}

func getKey(ctx context.Context, url string) (*e2ee.SignedMessagingKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, body)
	}
	var a struct {
		Key []byte `json:"key"`
	}
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, err
	}
	return e2ee.DecodeSignedMessagingKey(a.Key)
}

// A phone whose clock is 20 minutes fast and a laptop whose clock is 20 minutes slow (each 4 times the grid's
// 5-minute tolerance, 40 minutes apart) register, authenticate, publish messaging keys dated by the grid's
// clock, and chat both ways: the SDK signs, and dates its messages, at its gateway's time from the hello.
func TestDevicesWithClocksTwentyMinutesOffRegisterPublishKeysAndChat(t *testing.T) {
	g := newGrid(t, 2)
	fast := g.registerAt("fast", 20*time.Minute, 0)
	slow := g.registerAt("slow", -20*time.Minute, 1)
	for i, c := range []*client.Client{fast, slow} {
		k := g.publishedKey(1-i, c.Device())
		if d := time.Since(k.Created).Abs(); d > time.Minute {
			t.Fatalf("device %d's published messaging key is dated %v from the grid's clock, want under a minute", i, d)
		}
	}
	conv := mustDirect(t, g.ctx, fast, "slow")
	msgs := []string{"my clock says it is later than it is", "mine says it is earlier", "and yet here we are"}
	send(t, g.ctx, fast, conv, msgs[0])
	waitTexts(t, slow, conv, msgs[:1])
	send(t, g.ctx, slow, conv, msgs[1])
	waitTexts(t, fast, conv, msgs[:2])
	send(t, g.ctx, fast, conv, msgs[2])
	for _, c := range []*client.Client{fast, slow} {
		waitTexts(t, c, conv, msgs)
	}
	// Message times are the grid's, not the senders' clocks (which are 40 minutes apart).
	ms, err := fast.Messages(conv)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if d := time.Since(m.Sent); d.Abs() > time.Minute {
			t.Fatalf("%q is dated %v before now, want within a minute (the grid's clock)", m.Text, d)
		}
	}
}

// A device whose clock is further from the gateway's than MaxClockOffset is refused with ErrClockOffset, both
// when it registers and when an existing device's clock later jumps.
func TestClockBeyondMaxOffsetIsRefusedWithClearError(t *testing.T) {
	g := newGrid(t, 1)
	cfg := g.config(0)
	cfg.Now = func() time.Time { return time.Now().Add(client.MaxClockOffset + time.Hour) }
	_, err := client.Register(g.ctx, cfg, "future")
	if !errors.Is(err, client.ErrClockOffset) {
		t.Fatalf("register with a clock 25 h fast: %v, want ErrClockOffset", err)
	}

	cfg = g.config(0)
	var skew atomic.Int64
	cfg.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	c, err := client.Register(g.ctx, cfg, "jumper")
	if err != nil {
		t.Fatal(err)
	}
	dir := cfg.Dir
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	skew.Store(int64(-client.MaxClockOffset - time.Hour))
	cfg.Dir = dir
	c, err = client.Open(g.ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for {
		select {
		case ev := <-c.Events():
			ce, ok := ev.(*client.ConnectionEvent)
			if !ok || ce.Err == nil {
				continue
			}
			if !errors.Is(ce.Err, client.ErrClockOffset) {
				t.Fatalf("connection event %v, want ErrClockOffset", ce.Err)
			}
			return
		case <-g.ctx.Done():
			t.Fatal("no connection event with ErrClockOffset")
		}
	}
}

// A new device whose clock is 20 minutes slow links to an account whose device's clock is 20 minutes fast: the
// joiner dates its keys by the hello of the gateway it joins through, so its messaging key is accepted and it
// takes part in the account's conversations.
func TestDeviceWithSlowClockLinksToDeviceWithFastClockAndChats(t *testing.T) {
	g := newGrid(t, 2)
	host := g.registerAt("host", 20*time.Minute, 0)
	peer := g.register("peer", 1)
	inv, err := host.InviteDevice(link.KindQR)
	if err != nil {
		t.Fatal(err)
	}
	ticket, err := client.ParseInvitation(inv.QRPayload, inv.ShortCode)
	if err != nil {
		t.Fatal(err)
	}
	hr, err := host.HostRelay(g.ctx, inv)
	if err != nil {
		t.Fatal(err)
	}
	cfg := g.config(1)
	cfg.Now = func() time.Time { return time.Now().Add(-20 * time.Minute) }
	jcfg := cfg
	jcfg.Gateways = []string{hr.Gateway()}
	jr, err := client.JoinRelay(g.ctx, jcfg, ticket)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := host.HostLink(g.ctx, inv, hr)
		done <- err
	}()
	joined, err := client.Link(g.ctx, cfg, ticket, jr)
	if err != nil {
		t.Fatalf("link: %v (host: %v)", err, <-done)
	}
	if err := <-done; err != nil {
		t.Fatalf("host link: %v", err)
	}
	t.Cleanup(func() { joined.Close() })
	if err := joined.WaitConnected(g.ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(g.publishedKey(0, joined.Device()).Created).Abs(); d > time.Minute {
		t.Fatalf("the linked device's messaging key is dated %v from the grid's clock, want under a minute", d)
	}
	conv := mustDirect(t, g.ctx, host, "peer")
	msgs := []string{"from the fast phone", "from the slow laptop", "from the peer"}
	send(t, g.ctx, host, conv, msgs[0])
	waitTexts(t, joined, conv, msgs[:1])
	send(t, g.ctx, joined, conv, msgs[1])
	waitTexts(t, peer, conv, msgs[:2])
	send(t, g.ctx, peer, conv, msgs[2])
	for _, c := range []*client.Client{host, joined, peer} {
		waitTexts(t, c, conv, msgs)
	}
}
