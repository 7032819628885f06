package client

import (
	"context"
	"crypto/rand"
	mrand "math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/iagon/gridchat/client/store"
	"github.com/iagon/gridchat/e2ee"
)

// These tests prove the conversation order of docs/PROTOCOL.md §9.3 on real devices (memNet, engine_test.go):
// one total order on every device, in which a message follows everything its sender had received.

// setClock makes d's clock run off from the real one by skew.
func setClock(d *device, skew time.Duration) {
	d.eng.cfg.now = func() time.Time { return time.Now().Add(skew) }
}

// freezeClock stops d's clock at at.
func freezeClock(d *device, at time.Time) {
	d.eng.cfg.now = func() time.Time { return at }
}

// freezeClocks stops every device's clock at one instant, the current millisecond, and returns it.
func freezeClocks(devs ...*device) time.Time {
	at := time.Now().Truncate(time.Millisecond)
	for _, d := range devs {
		freezeClock(d, at)
	}
	return at
}

// sendHistory has from send its account's history to to, a device linked to the account since, and delivers
// it.
func sendHistory(t *testing.T, from, to *device) {
	t.Helper()
	if err := from.eng.ensureConv(SelfConversationID(from.eng.self), &convRecord{Kind: Self}); err != nil {
		t.Fatal(err)
	}
	host := &Client{cd: from.eng.cd, st: from.st, eng: from.eng}
	if _, err := host.SendHistory(context.Background(), to.keys.ID()); err != nil {
		t.Fatal(err)
	}
	deliver(t, from, to)
}

// newTestGroup creates a group of the devices' accounts with admin's account as its admin and announces it.
func newTestGroup(t *testing.T, admin *device, devs ...*device) e2ee.ConversationID {
	t.Helper()
	conv, _, _ := startTestGroup(t, admin, devs...)
	return conv
}

// startTestGroup is newTestGroup that also returns the group's first state and its signed record.
func startTestGroup(t *testing.T, admin *device, devs ...*device) (e2ee.ConversationID, *GroupState, []byte) {
	t.Helper()
	conv, err := e2ee.NewConversationID()
	if err != nil {
		t.Fatal(err)
	}
	var members []e2ee.AccountID
	for _, d := range devs {
		members = append(members, d.eng.self)
	}
	slices.SortFunc(members, cmpAccount)
	members = slices.Compact(members)
	g := &GroupState{Conversation: conv, Version: 1, Name: "order", Members: members, Admins: []e2ee.AccountID{admin.eng.self},
		Signer: admin.eng.self, Time: admin.eng.cfg.now().UTC()}
	rec, err := admin.eng.cd.signGroupState(admin.keys, g)
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.eng.ensureConv(conv, &convRecord{Kind: Group, Group: rec}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.eng.send(context.Background(), conv, &payload{Type: PayloadGroupState, Group: rec}, sendOpts{}); err != nil {
		t.Fatal(err)
	}
	deliver(t, devs...)
	return conv, g, rec
}

// listing returns the messages d lists in conv.
func listing(t *testing.T, d *device, conv e2ee.ConversationID) []Message {
	t.Helper()
	ms, err := d.eng.messages(conv)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// wantTexts fails unless every device lists exactly want (texts, in order) in conv.
func wantTexts(t *testing.T, conv e2ee.ConversationID, want []string, devs map[string]*device) {
	t.Helper()
	for name, d := range devs {
		if got := texts(t, d, conv); !slices.Equal(got, want) {
			t.Errorf("%s lists %q, want %q", name, got, want)
		}
	}
}

func findText(t *testing.T, ms []Message, text string) Message {
	t.Helper()
	for _, m := range ms {
		if m.Text == text {
			return m
		}
	}
	t.Fatalf("no message %q", text)
	return Message{}
}

// Acceptance 1: Alice's clock is 10 minutes slow. She answers Bob's question; by the senders' clocks her answer
// is older than the question, yet Alice, Bob and Carol all list it after the question.
func TestReplyFromSlowClockListsAfterWhatItAnswersOnEveryDevice(t *testing.T) {
	net := newMemNet()
	alice, _ := newAccount(t, net, "alice", e2ee.RenewalPolicy{})
	bob, _ := newAccount(t, net, "bob", e2ee.RenewalPolicy{})
	carol, _ := newAccount(t, net, "carol", e2ee.RenewalPolicy{})
	setClock(alice, -10*time.Minute)
	conv := newTestGroup(t, bob, alice, bob, carol)

	sendText(t, bob, conv, "lunch at noon?")
	deliver(t, alice, bob, carol)
	sendText(t, alice, conv, "yes, see you there")
	deliver(t, alice, bob, carol)

	devs := map[string]*device{"alice": alice, "bob": bob, "carol": carol}
	wantTexts(t, conv, []string{"lunch at noon?", "yes, see you there"}, devs)
	ms := listing(t, carol, conv)
	q, a := findText(t, ms, "lunch at noon?"), findText(t, ms, "yes, see you there")
	if !a.Sent.Before(q.Sent) {
		t.Fatalf("the answer's sent time %v is not before the question's %v: the clocks are not skewed", a.Sent, q.Sent)
	}
	if a.Clock <= q.Clock {
		t.Fatalf("the answer's counter %d is not above the question's %d", a.Clock, q.Clock)
	}
	// The order survives more turns: Bob answers Alice, Alice answers again.
	sendText(t, bob, conv, "great")
	deliver(t, alice, bob, carol)
	sendText(t, alice, conv, "bring the slides")
	deliver(t, alice, bob, carol)
	wantTexts(t, conv, []string{"lunch at noon?", "yes, see you there", "great", "bring the slides"}, devs)
}

// Acceptance 2: Alice, Bob and Carol send at once, all within one millisecond (the same frozen clock), each
// before it has seen the others' messages. Every device lists the three in one order, and so does a device
// Alice links afterwards from the history her first device sends it; the new device's first message lists
// after all of them.
func TestConcurrentMessagesInOneMillisecondListAlikeOnEveryDeviceAndInHistory(t *testing.T) {
	net := newMemNet()
	alice, achain := newAccount(t, net, "alice", e2ee.RenewalPolicy{})
	bob, _ := newAccount(t, net, "bob", e2ee.RenewalPolicy{})
	carol, _ := newAccount(t, net, "carol", e2ee.RenewalPolicy{})
	at := freezeClocks(alice, bob, carol)
	conv := newTestGroup(t, carol, alice, bob, carol)

	sendText(t, alice, conv, "from alice")
	sendText(t, bob, conv, "from bob")
	sendText(t, carol, conv, "from carol")
	deliver(t, alice, bob, carol)

	ref := listing(t, alice, conv)
	var want []string
	for _, m := range ref {
		if m.Type == PayloadText {
			want = append(want, m.Text)
		}
	}
	if len(want) != 3 {
		t.Fatalf("alice lists %q, want the three messages", want)
	}
	for _, m := range ref {
		if m.Type == PayloadText && (m.Clock != ref[len(ref)-1].Clock || !m.Sent.Equal(at)) {
			t.Fatalf("message %q has counter %d and time %v: not concurrent within one millisecond", m.Text, m.Clock, m.Sent)
		}
	}
	if !slices.IsSortedFunc(ref, CompareMessages) {
		t.Fatal("alice's listing is not sorted by CompareMessages")
	}
	devs := map[string]*device{"alice": alice, "bob": bob, "carol": carol}
	wantTexts(t, conv, want, devs)

	alice2 := linkDevice(t, net, achain, alice)
	freezeClock(alice2, at)
	sendHistory(t, alice, alice2)
	devs["alice2"] = alice2
	wantTexts(t, conv, want, devs)
	for i, m := range listing(t, alice2, conv) {
		if m.Clock != ref[i].Clock || m.SenderDevice != ref[i].SenderDevice || m.Seq != ref[i].Seq {
			t.Fatalf("linked device's message %d = %q (counter %d), want %q (counter %d)", i, m.Text, m.Clock, ref[i].Text, ref[i].Clock)
		}
	}
	sendText(t, alice2, conv, "from alice's new device")
	deliver(t, alice, alice2, bob, carol)
	wantTexts(t, conv, append(slices.Clone(want), "from alice's new device"), devs)
}

// Acceptance 3, old clients: a numbered payload without a counter (as a client that predates it sends) lists
// by its sent time among messages that carry one, alike on every device, and a reply to it lists after it.
func TestPayloadWithoutCounterListsByItsTime(t *testing.T) {
	net := newMemNet()
	alice, _ := newAccount(t, net, "alice", e2ee.RenewalPolicy{})
	bob, _ := newAccount(t, net, "bob", e2ee.RenewalPolicy{})
	old, _ := newAccount(t, net, "old", e2ee.RenewalPolicy{})
	at := freezeClocks(alice, bob, old)
	conv := newTestGroup(t, alice, alice, bob, old)

	sendText(t, alice, conv, "at 0 s")
	freezeClock(bob, at.Add(2*time.Second))
	sendText(t, bob, conv, "at 2 s")
	// The old client numbers its messages but sets no counter; seal only counts payloads it numbers itself.
	r, _ := old.eng.conv(conv)
	for i, m := range []struct {
		text string
		at   time.Duration
	}{{"old client at 1 s", time.Second}, {"old client at -1 s", -time.Second}} {
		p := &payload{Type: PayloadText, Text: m.text, Seq: r.NextSeq + uint64(i), SentMS: at.Add(m.at).UnixMilli()}
		if _, err := old.eng.send(context.Background(), conv, p, sendOpts{}); err != nil {
			t.Fatal(err)
		}
		if p.Clock != 0 {
			t.Fatalf("the old client's payload carries counter %d", p.Clock)
		}
	}
	deliver(t, alice, bob, old)
	devs := map[string]*device{"alice": alice, "bob": bob, "old": old}
	wantTexts(t, conv, []string{"old client at -1 s", "at 0 s", "old client at 1 s", "at 2 s"}, devs)
	// Alice, her clock now a minute slow, answers the newest message: her answer lists last.
	freezeClock(alice, at.Add(-time.Minute))
	sendText(t, alice, conv, "answer")
	deliver(t, alice, bob, old)
	wantTexts(t, conv, []string{"old client at -1 s", "at 0 s", "old client at 1 s", "at 2 s", "answer"}, devs)
}

// Acceptance 3, the bound: a member sends a counter 100 days ahead. It lists by that counter, last, on every
// device; the others follow it only up to their clock + MaxClockLead, so their counters stay near their clocks
// and a reply lists before it (as docs/PROTOCOL.md §9.3 says). A counter over MaxClock is refused.
func TestCounterFarAheadIsFollowedOnlyUpToTheLead(t *testing.T) {
	net := newMemNet()
	alice, _ := newAccount(t, net, "alice", e2ee.RenewalPolicy{})
	bob, _ := newAccount(t, net, "bob", e2ee.RenewalPolicy{})
	mallory, _ := newAccount(t, net, "mallory", e2ee.RenewalPolicy{})
	at := freezeClocks(alice, bob, mallory)
	conv := newTestGroup(t, alice, alice, bob, mallory)
	sendText(t, alice, conv, "hello")
	deliver(t, alice, bob, mallory)

	ahead := uint64(at.Add(100 * 24 * time.Hour).UnixMilli())
	r, _ := mallory.eng.conv(conv)
	p := &payload{Type: PayloadText, Text: "far ahead", Seq: r.NextSeq, Clock: ahead}
	if _, err := mallory.eng.send(context.Background(), conv, p, sendOpts{}); err != nil {
		t.Fatal(err)
	}
	deliver(t, alice, bob, mallory)
	devs := map[string]*device{"alice": alice, "bob": bob, "mallory": mallory}
	wantTexts(t, conv, []string{"hello", "far ahead"}, devs)
	limit := uint64(at.Add(MaxClockLead).UnixMilli())
	for name, d := range map[string]*device{"alice": alice, "bob": bob} {
		if r, _ := d.eng.conv(conv); r.Clock != limit {
			t.Errorf("%s's clock after the jump is %d, want its clock + MaxClockLead = %d", name, r.Clock, limit)
		}
	}
	sendText(t, bob, conv, "reply")
	deliver(t, alice, bob, mallory)
	wantTexts(t, conv, []string{"hello", "reply", "far ahead"}, devs)
	if m := findText(t, listing(t, alice, conv), "reply"); m.Clock != limit+1 {
		t.Fatalf("bob's reply has counter %d, want %d", m.Clock, limit+1)
	}

	// A counter over MaxClock cannot be sent, and a receiver's decoder refuses it.
	over := &payload{Type: PayloadText, Text: "overflow", Seq: r.NextSeq + 1, Clock: MaxClock + 1}
	if _, err := mallory.eng.send(context.Background(), conv, over, sendOpts{}); err == nil {
		t.Fatal("a counter over MaxClock was sent")
	}
	b, err := alice.eng.cd.enc.Marshal(map[int]any{1: 1, 2: 1, 3: 1, 4: 0, 5: "x", 13: uint64(MaxClock) + 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.eng.cd.decodePayload(b); err == nil {
		t.Fatal("a payload with a counter over MaxClock decoded")
	}
}

// The counter lives in the conversation record: after a restart with its clock set an hour back, a device's
// next message still lists after everything it sent or saw, and a resent message keeps its counter.
func TestCounterSurvivesRestartAndResendKeepsIt(t *testing.T) {
	net := newMemNet()
	alice, _ := newAccount(t, net, "alice", e2ee.RenewalPolicy{})
	bob, _ := newAccount(t, net, "bob", e2ee.RenewalPolicy{})
	conv := startDirect(t, alice, bob.eng.self)
	sendText(t, alice, conv, "one")
	deliver(t, alice, bob)
	sendText(t, bob, conv, "two")
	deliver(t, alice, bob)

	alice = restart(t, alice)
	setClock(alice, -time.Hour)
	lost := true
	net.drop = func(to e2ee.DeviceID, _ []byte) bool {
		drop := lost && to == bob.keys.ID()
		lost = false
		return drop
	}
	sendText(t, alice, conv, "three") // lost on its way to Bob
	net.drop = nil
	sendText(t, alice, conv, "four")
	deliver(t, alice, bob) // Bob sees the gap, asks, and Alice resends "three"
	want := []string{"one", "two", "three", "four"}
	wantTexts(t, conv, want, map[string]*device{"alice": alice, "bob": bob})
	am, bm := listing(t, alice, conv), listing(t, bob, conv)
	for i := range am {
		if am[i].Clock != bm[i].Clock {
			t.Fatalf("message %q has counter %d at alice, %d at bob", am[i].Text, am[i].Clock, bm[i].Clock)
		}
	}
}

// restart closes d's store and opens the same state in a new engine, as a client restart does.
func restart(t *testing.T, d *device) *device {
	t.Helper()
	if err := d.st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(d.dir, d.storeKey, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	nd := newDeviceOn(t, d.net, d.keys, d.eng.self, d.eng.cfg.policy, st)
	nd.dir, nd.storeKey = d.dir, d.storeKey
	return nd
}

func TestCompareMessagesIsTheListOrder(t *testing.T) {
	var d1, d2 e2ee.DeviceID
	rand.Read(d1[:])
	d2 = d1
	d2[31] ^= 1
	if d1[31] > d2[31] {
		d1, d2 = d2, d1
	}
	t0 := time.UnixMilli(1_700_000_000_000)
	// In list order.
	ms := []Message{
		{Text: "old client, earliest", Sent: t0.Add(-time.Second), SenderDevice: d2, Seq: 1},
		{Text: "counter at its time", Clock: uint64(t0.UnixMilli()), Sent: t0, SenderDevice: d2, Seq: 2},
		{Text: "same counter, later time", Clock: uint64(t0.UnixMilli()), Sent: t0.Add(time.Millisecond), SenderDevice: d1, Seq: 1},
		{Text: "old client, same order, later time", Sent: t0.Add(2 * time.Millisecond), SenderDevice: d1, Seq: 2},
		{Text: "counter ahead, earlier time", Clock: uint64(t0.UnixMilli()) + 3, Sent: t0.Add(-time.Minute), SenderDevice: d2, Seq: 3},
		{Text: "same counter and time, lower device", Clock: uint64(t0.UnixMilli()) + 4, Sent: t0, SenderDevice: d1, Seq: 9},
		{Text: "same counter and time, higher device", Clock: uint64(t0.UnixMilli()) + 4, Sent: t0, SenderDevice: d2, Seq: 4},
		{Text: "same everything, higher number", Clock: uint64(t0.UnixMilli()) + 4, Sent: t0, SenderDevice: d2, Seq: 5},
		{Text: "old client, clock before 1970", Sent: time.UnixMilli(-5), SenderDevice: d1, Seq: 10},
	}
	// The message from before 1970 orders as counter 0, first.
	want := append([]Message{ms[len(ms)-1]}, ms[:len(ms)-1]...)
	for range 20 {
		got := slices.Clone(ms)
		mrand.Shuffle(len(got), func(i, j int) { got[i], got[j] = got[j], got[i] })
		slices.SortFunc(got, CompareMessages)
		for i := range got {
			if got[i].Text != want[i].Text {
				t.Fatalf("position %d: %q, want %q", i, got[i].Text, want[i].Text)
			}
		}
	}
}

// A linked device that already holds a conversation (from a live message) when the history arrives still
// follows the history's counters: its next message lists after everything the history holds.
func TestHistoryImportRaisesClockOfKnownConversation(t *testing.T) {
	net := newMemNet()
	alice, achain := newAccount(t, net, "alice", e2ee.RenewalPolicy{})
	bob, _ := newAccount(t, net, "bob", e2ee.RenewalPolicy{})
	carol, _ := newAccount(t, net, "carol", e2ee.RenewalPolicy{})
	at := freezeClocks(bob, carol)
	freezeClock(alice, at.Add(30*time.Minute)) // fast, within MaxClockLead
	conv := newTestGroup(t, bob, alice, bob, carol)
	sendText(t, bob, conv, "from bob")
	deliver(t, alice, bob, carol)
	sendText(t, alice, conv, "from alice, half an hour ahead")
	deliver(t, alice, bob) // Carol is offline: her copy waits

	// Carol, who has not seen Alice's message, writes; Alice's new device gets it live and so holds the
	// conversation, with a clock behind Alice's message, before the history arrives.
	alice2 := linkDevice(t, net, achain, alice)
	freezeClock(alice2, at)
	sendText(t, carol, conv, "from carol")
	deliver(t, alice2)
	r, ok := alice2.eng.conv(conv)
	if !ok || r.Clock >= uint64(at.Add(30*time.Minute).UnixMilli()) {
		t.Fatalf("before the history, alice2's conversation is %+v, %v: want it known, behind Alice's counter", r, ok)
	}
	sendHistory(t, alice, alice2)
	sendText(t, alice2, conv, "from alice's new device")
	deliver(t, alice, alice2, bob, carol)
	want := []string{"from bob", "from carol", "from alice, half an hour ahead", "from alice's new device"}
	wantTexts(t, conv, want, map[string]*device{"alice": alice, "alice2": alice2, "bob": bob, "carol": carol})
}
