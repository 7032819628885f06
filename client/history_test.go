package client_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/iagon/gridchat/client"
	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/e2ee/link"
)

// Issue 14, acceptance 6: a device linked after 500 messages in three conversations (both sides speaking)
// shows all 500, in the order they were sent (as its old device shows them), from the history its account's
// first device streams to it through the grid; a scan of every node's datastore finds none of them in clear.
func TestDeviceLinkedAfterFiveHundredMessagesShowsThemAndNodesHoldNoneInClear(t *testing.T) {
	const total = 500
	g := newGrid(t, 3)
	alice := g.register("alice", 0)
	var convs []e2ee.ConversationID
	var all []string
	var perConv [][]string // each conversation's texts in the order they were sent
	sent := 0
	for i, name := range []string{"bob", "carol", "dave"} {
		peer := g.register(name, 1+i%2)
		conv := mustDirect(t, g.ctx, alice, name)
		n := total / 3
		if i == 0 {
			n += total % 3
		}
		var texts []string
		for j := range n {
			from, text := alice, fmt.Sprintf("history %s %03d from alice", name, j)
			if j%4 == 3 {
				from, text = peer, fmt.Sprintf("history %s %03d to alice", name, j)
			}
			// Each side waits until it has every message so far before it answers, so each message follows all
			// earlier ones causally and every device lists them in the order they were sent (§9.3 Order).
			if j > 0 && from != alice && j%4 == 3 {
				waitTextSet(t, peer, conv, texts)
			}
			if j > 0 && from == alice && j%4 == 0 {
				waitTextSet(t, alice, conv, texts)
			}
			send(t, g.ctx, from, conv, text)
			texts = append(texts, text)
			sent++
		}
		waitTexts(t, peer, conv, texts)
		waitTexts(t, alice, conv, texts)
		convs = append(convs, conv)
		perConv = append(perConv, texts)
		all = append(all, texts...)
	}
	if sent != total {
		t.Fatalf("sent %d messages, want %d", sent, total)
	}
	alice2 := g.link(alice, link.KindQR, 2)
	n, err := alice.SendHistory(g.ctx, alice2.Device())
	if err != nil || n < total {
		t.Fatalf("send history: %d entries, %v; want at least %d", n, err, total)
	}
	for i, conv := range convs {
		waitTexts(t, alice2, conv, perConv[i])
	}
	g.scanForPlaintext(all...)
}

// waitTextSet waits until c shows exactly the texts of want in conv, in any order.
func waitTextSet(t *testing.T, c *client.Client, conv e2ee.ConversationID, want []string) {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	deadline := time.Now().Add(60 * time.Second)
	var got []string
	for time.Now().Before(deadline) {
		got = slices.Sorted(slices.Values(texts(t, c, conv)))
		if slices.Equal(got, want) {
			return
		}
		time.Sleep(20 * time.Millisecond) // polling the history with a deadline
	}
	t.Fatalf("device %s shows %d messages %q, want %d %q (any order)", c.Device().String()[:8], len(got), clip(got), len(want), clip(want))
}
