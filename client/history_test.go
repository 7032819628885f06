package client_test

import (
	"fmt"
	"testing"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/e2ee/link"
)

// Issue 14, acceptance 6: a device linked after 500 messages in three conversations (both sides speaking)
// shows all 500, in order, from the history its account's first device streams to it through the grid; a scan
// of every node's datastore finds none of them in clear.
func TestDeviceLinkedAfterFiveHundredMessagesShowsThemAndNodesHoldNoneInClear(t *testing.T) {
	const total = 500
	g := newGrid(t, 3)
	alice := g.register("alice", 0)
	var convs []e2ee.ConversationID
	var want [][]string
	var all []string
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
			// Each side waits until it has the other's last message, so the order is the same everywhere.
			if j > 0 && from != alice && j%4 == 3 {
				waitTexts(t, peer, conv, texts)
			}
			if j > 0 && from == alice && j%4 == 0 {
				waitTexts(t, alice, conv, texts)
			}
			send(t, g.ctx, from, conv, text)
			texts = append(texts, text)
			sent++
		}
		waitTexts(t, peer, conv, texts)
		waitTexts(t, alice, conv, texts)
		convs = append(convs, conv)
		want = append(want, texts)
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
		waitTexts(t, alice2, conv, want[i])
	}
	g.scanForPlaintext(all...)
}
