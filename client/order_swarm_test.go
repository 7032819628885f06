package client_test

import (
	"testing"
	"time"

	"github.com/iagon/gridchat/client"
)

// registerAt registers a device whose clock runs skew off the real one; the SDK corrects it (up to
// MaxClockOffset) by its gateway's hello. The engine tests, which have no gateway and so no correction, take
// uncorrected clocks apart (TestReplyFromSlowClockListsAfterWhatItAnswersOnEveryDevice).
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
// in their group; Alice, Bob and Carol (each on their own node) list it after the question, and Bob's answer to
// her after that. Both date their messages by the grid's clock, not 4 minutes apart as their own clocks are.
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
	if d := sent["yes, all green"].Sub(sent["is the build green?"]); d.Abs() > time.Minute {
		t.Fatalf("the answer is dated %v after the question, want within a minute (the grid's clock, not the senders')", d)
	}
}

// A phone whose clock is 3 hours fast (3 times MaxClockLead) and a laptop on time chat through a real grid. The
// phone's counters and message times follow the grid-corrected clock, so they are within the laptop's lead:
// the laptop's reply lists after the question it answers on both devices, and the phone's follow-up after it.
func TestReplyToDeviceThreeHoursFastListsAfterQuestionOnBothDevices(t *testing.T) {
	g := newGrid(t, 2)
	fast := g.registerAt("fast", 3*time.Hour, 0)
	onTime := g.register("ontime", 1)
	conv := mustDirect(t, g.ctx, fast, "ontime")
	msgs := []string{"what time is it?", "time to fix your clock", "it says three hours later"}
	send(t, g.ctx, fast, conv, msgs[0])
	waitTexts(t, onTime, conv, msgs[:1])
	send(t, g.ctx, onTime, conv, msgs[1])
	waitTexts(t, fast, conv, msgs[:2])
	send(t, g.ctx, fast, conv, msgs[2])
	for _, c := range []*client.Client{fast, onTime} {
		waitTexts(t, c, conv, msgs)
	}
	now := time.Now()
	for name, c := range map[string]*client.Client{"fast": fast, "ontime": onTime} {
		ms, err := c.Messages(conv)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if lead := time.Duration(int64(m.Clock)-now.UnixMilli()) * time.Millisecond; lead > time.Minute {
				t.Errorf("on %s, %q has counter %d, %v ahead of the grid's clock, want within a minute (lead %v)",
					name, m.Text, m.Clock, lead, client.MaxClockLead)
			}
			if d := now.Sub(m.Sent); d.Abs() > time.Minute {
				t.Errorf("on %s, %q is dated %v before now, want within a minute (the grid's clock)", name, m.Text, d)
			}
			if d := now.Sub(m.Received); d.Abs() > time.Minute {
				t.Errorf("on %s, %q was received %v before now, want within a minute (the grid's clock)", name, m.Text, d)
			}
		}
	}
}
