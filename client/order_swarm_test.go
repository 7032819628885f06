package client_test

import (
	"testing"
	"time"

	"github.com/iagon/gridchat/client"
)

// registerAt registers a device whose clock runs skew off the real one. Devices whose clocks are more than
// e2ee.ClockSkew (5 minutes) apart refuse each other's fresh messaging keys, so the grid test stays within it;
// the engine test TestReplyFromSlowClockListsAfterWhatItAnswersOnEveryDevice takes clocks 10 minutes apart.
func (g *grid) registerAt(name string, skew time.Duration, nodes ...int) *client.Client {
	g.t.Helper()
	cfg := g.config(nodes...)
	cfg.Now = func() time.Time { return time.Now().Add(skew) }
	c, err := client.Register(g.ctx, cfg, name)
	if err != nil {
		g.t.Fatalf("register %s: %v", name, err)
	}
	g.t.Cleanup(func() { c.Close() })
	if err := c.WaitConnected(g.ctx); err != nil {
		g.t.Fatal(err)
	}
	return c
}

// Through a real grid: Alice's clock is 2 minutes slow and Bob's 2 minutes fast. Alice answers Bob's question
// in their group; her answer's sent time is 4 minutes before the question's, yet Alice, Bob and Carol (each on
// their own node) list it after the question, and Bob's answer to her after that.
func TestReplyListsAfterWhatItAnswersThroughTheGridDespiteSkewedClocks(t *testing.T) {
	g := newGrid(t, 3)
	alice := g.registerAt("alice", -2*time.Minute, 0)
	bob := g.registerAt("bob", 2*time.Minute, 1)
	carol := g.register("carol", 2)
	cv, err := bob.CreateGroup(g.ctx, "skew", "alice", "carol")
	if err != nil {
		t.Fatal(err)
	}
	send(t, g.ctx, bob, cv.ID, "is the build green?")
	waitTexts(t, alice, cv.ID, []string{"is the build green?"})
	send(t, g.ctx, alice, cv.ID, "yes, all green")
	waitTexts(t, bob, cv.ID, []string{"is the build green?", "yes, all green"})
	send(t, g.ctx, bob, cv.ID, "shipping it")
	want := []string{"is the build green?", "yes, all green", "shipping it"}
	for _, c := range []*client.Client{alice, bob, carol} {
		waitTexts(t, c, cv.ID, want)
	}
	ms, err := carol.Messages(cv.ID)
	if err != nil {
		t.Fatal(err)
	}
	sent := map[string]time.Time{}
	for _, m := range ms {
		sent[m.Text] = m.Sent
	}
	if d := sent["is the build green?"].Sub(sent["yes, all green"]); d < 3*time.Minute {
		t.Fatalf("the answer was sent %v before the question by the senders' clocks, want about 4 minutes", d)
	}
}
