package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iagon/gridchat/client"
	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/wire"
)

// countingConn counts the bytes a client reads from its gateway (WebSocket pushes and directory answers).
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// countingHTTPClient returns an HTTP client whose connections add every byte read to n; its idle connections
// are closed when t ends.
func countingHTTPClient(t *testing.T, n *atomic.Int64) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return countingConn{c, n}, nil
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Timeout: 20 * time.Second, Transport: tr}
}

// member is a registered client and the bytes it has read from the grid.
type member struct {
	c    *client.Client
	read *atomic.Int64
}

// registerMany registers one account per name, on the grid's nodes in turn, a few at a time.
func (g *grid) registerMany(names []string) []member {
	g.t.Helper()
	out := make([]member, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	cfgs := make([]client.Config, len(names))
	for i := range names {
		out[i].read = new(atomic.Int64)
		cfgs[i] = g.config(i % len(g.nodes))
		cfgs[i].HTTPClient = countingHTTPClient(g.t, out[i].read) // closed after the clients (cleanups run last first)
	}
	for i, name := range names {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			cfg := cfgs[i]
			c, err := client.Register(g.ctx, cfg, name)
			if err == nil {
				err = c.WaitConnected(g.ctx)
			}
			out[i].c, errs[i] = c, err
		})
	}
	wg.Wait()
	for i, m := range out {
		if m.c != nil {
			g.t.Cleanup(func() { m.c.Close() })
		}
		if errs[i] != nil {
			g.t.Fatalf("register %s: %v", names[i], errs[i])
		}
	}
	return out
}

// Task A, acceptance 1: a group of 70 recipient devices on a 3-node swarm. The session's first message (the
// group's creation) reaches every device, which decrypts it; the sender gets one status per device; each
// device reads about one key distribution chunk, not the 70 entries of one distribution for all.
func TestGroupOfSeventyRecipientDevicesGetsItsFirstMessage(t *testing.T) {
	g := newGrid(t, 3)
	const n = 70
	names := []string{"host"}
	for i := range n {
		names = append(names, fmt.Sprintf("member%02d", i))
	}
	ms := g.registerMany(names)
	host, recips := ms[0].c, ms[1:]
	drain(host)
	before := make([]int64, n)
	for i, m := range recips {
		before[i] = m.read.Load()
	}
	cv, err := host.CreateGroup(g.ctx, "seventy", names[1:]...)
	if err != nil {
		t.Fatal(err)
	}
	st := deliveryStatuses(t, host)
	if len(st) != n {
		t.Fatalf("%d delivery statuses for the first message, want %d", len(st), n)
	}
	want := map[e2ee.DeviceID]bool{}
	for _, m := range recips {
		want[m.c.Device()] = true
	}
	for _, s := range st {
		if !want[s.Device] || (s.Status != wire.StatusDelivered && s.Status != wire.StatusStored) {
			t.Fatalf("status %+v: want delivered or stored, for a member device, once each", s)
		}
		delete(want, s.Device)
	}
	// Every device decrypts the group's first message: it knows the group, with all its members.
	deadline := time.Now().Add(60 * time.Second)
	var read []int64
	for i, m := range recips {
		for {
			c, err := m.c.Conversation(cv.ID)
			if err == nil && c.Group != nil && len(c.Group.Members) == n+1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("device %d never decrypted the group's first message (%v)", i, err)
			}
			time.Sleep(20 * time.Millisecond) // polling the conversation with a deadline
		}
		read = append(read, m.read.Load()-before[i])
	}
	slices.Sort(read)
	single := e2ee.KeyDistOverhead + n*e2ee.KeyDistEntrySize
	t.Logf("first message: each of %d devices read %d to %d bytes (median %d) from the grid; one key distribution "+
		"for all %d recipients alone is %d bytes (%d as base64 in a push), over the grid's 65536-byte envelope limit",
		n, read[0], read[len(read)-1], read[len(read)/2], n, single, (single+2)/3*4)
	// One chunk is under one grid envelope; a push carries it as base64 (4/3), plus the directory answers a
	// device needs to check the sender. The single distribution alone would be more.
	if bound := int64(64<<10)*4/3 + 16<<10; read[len(read)-1] > bound || int64(single*4/3) <= bound {
		t.Fatalf("a device read %d bytes for the first message, over %d", read[len(read)-1], bound)
	}
	// And the group talks.
	send(t, g.ctx, host, cv.ID, "hello seventy")
	for _, m := range recips {
		waitTexts(t, m.c, cv.ID, []string{"hello seventy"})
	}
}

// Task A, acceptance 2: the largest attachment the SDK allows goes through a real swarm (as fragments) and
// arrives byte for byte; one byte more is refused by the SDK, before anything is sent.
func TestLargestAttachmentCrossesTheSwarmAndOneByteMoreIsRefused(t *testing.T) {
	g := newGrid(t, 3)
	alice := g.register("alice", 0)
	bob := g.register("bob", 2)
	conv := mustDirect(t, g.ctx, alice, "bob")
	data := make([]byte, client.MaxAttachmentBytes)
	rand.Read(data)
	if _, err := alice.SendAttachment(g.ctx, conv, client.Attachment{Name: "max.bin", MIME: "application/octet-stream", Data: data}); err != nil {
		t.Fatal(err)
	}
	for _, s := range deliveryStatuses(t, alice) {
		if s.Status != wire.StatusDelivered && s.Status != wire.StatusStored {
			t.Fatalf("attachment status %+v", s)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ms, _ := bob.Messages(conv)
		if len(ms) == 1 && ms[0].Attachment != nil {
			if !bytes.Equal(ms[0].Attachment.Data, data) || ms[0].Attachment.Name != "max.bin" {
				t.Fatal("the attachment arrived changed")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob has %d messages, want the attachment", len(ms))
		}
		time.Sleep(20 * time.Millisecond) // polling the history with a deadline
	}
	drain(alice)
	_, err := alice.SendAttachment(g.ctx, conv, client.Attachment{Name: "over.bin", Data: make([]byte, client.MaxAttachmentBytes+1)})
	if !errors.Is(err, client.ErrTooLarge) {
		t.Fatalf("an attachment one byte over the limit: %v, want client.ErrTooLarge", err)
	}
	ms, _ := alice.Messages(conv)
	if len(ms) != 1 {
		t.Fatalf("alice's history holds %d messages after the refused one, want 1", len(ms))
	}
	// The longest text goes through too.
	text := string(bytes.Repeat([]byte("x"), client.MaxTextBytes))
	send(t, g.ctx, alice, conv, text)
	waitTexts(t, bob, conv, []string{text})
	if _, err := alice.SendText(g.ctx, conv, text+"x"); !errors.Is(err, client.ErrTooLarge) {
		t.Fatalf("a text one byte over the limit: %v, want client.ErrTooLarge", err)
	}
}
