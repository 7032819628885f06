package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/iagon/gridchat/client/store"
	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/wire"
)

// Forward compatibility of client envelopes (docs/PROTOCOL.md §9.1 "Extensions") and group-state records
// (§9.5 "Extensions"): what a newer client may put in them that this one does not know, and how this one
// treats it. The rule is the payload's (§9.3, compat_test.go).

// envMap is an envelope as a map, for a test to add what a newer client would.
func envMap(kd, msg []byte) map[int]any {
	m := map[int]any{1: 1, 3: msg}
	if kd != nil {
		m[2] = kd
	}
	return m
}

// fragMaps cuts the encoded envelope env into two fragment envelopes, as maps (the envelope's and, at key 6,
// the fragment's), for a test to add to.
func fragMaps(env []byte) []map[int]any {
	set := newMessageID()
	sum := sha256.Sum256(env)
	var out []map[int]any
	for i, data := range [][]byte{env[:len(env)/2], env[len(env)/2:]} {
		f := map[int]any{1: set[:], 2: i, 3: 2, 4: len(env), 5: sum[:], 6: data}
		out = append(out, map[int]any{1: 1, 6: f})
	}
	return out
}

// seal seals the payload m in the newer client's session and returns the e2ee message's encoding.
func (n *newerClient) seal(m map[int]any) []byte {
	n.t.Helper()
	msg, err := n.sender.Seal(mustMarshal(n.t, n.to.eng.cd, m))
	if err != nil {
		n.t.Fatal(err)
	}
	return msg.Encode()
}

// deliverEnvelope has the receiving device's engine process the envelope env (a map, or encoded bytes) under
// message ID id, and fails the test unless the engine acknowledges it (receive returns nil).
func (n *newerClient) deliverEnvelope(id wire.MessageID, env any) {
	n.t.Helper()
	b, ok := env.([]byte)
	if !ok {
		b = mustMarshal(n.t, n.to.eng.cd, env)
	}
	if err := n.to.eng.receive(context.Background(), id, n.from.keys.ID(), b); err != nil {
		n.t.Fatalf("receive: %v (the envelope would be delivered again)", err)
	}
}

// seen reports whether the device counts message ID id as processed (a repeat is acknowledged and dropped).
func seen(d *device, id wire.MessageID) bool {
	_, ok := d.st.Get(bucketSeen, hex.EncodeToString(id[:]))
	return ok
}

func TestEnvelopeIgnoresUnknownElectiveKeysWithinLimits(t *testing.T) {
	cd := mustCodec(t)
	frag := func(kv ...any) map[int]any {
		f := fragMaps(bytes.Repeat([]byte("e"), 100))[0]
		with(f[6].(map[int]any), kv...)
		return f
	}
	good := map[string]map[int]any{
		"message and scalar":         with(envMap([]byte("k"), []byte("m")), 7, 1),
		"message and map":            with(envMap(nil, []byte("m")), 9, map[any]any{"a": []any{1, map[int]any{-1: "x"}}}),
		"keys and key 0":             {1: 1, 4: [][]byte{[]byte("key")}, 0: "zero"},
		"key request and key 64":     {1: 1, 5: true, 64: []byte{1}},
		"value at the nesting limit": with(envMap(nil, []byte("m")), 7, nested(payloadMaxNesting-1)),
		"only elective keys":         {1: 1, 7: "a later version's signal", 8: map[int]any{1: 2}},
		"fragment beside elective":   with(frag(), 7, "x"),
		"elective key in a fragment": frag(7, map[int]any{1: "thumbnail"}, 1000, true),
	}
	for name, m := range good {
		e, err := cd.decodeEnvelope(mustMarshal(t, cd, m))
		if err != nil {
			t.Errorf("%s: refused: %v", name, err)
			continue
		}
		if name == "only elective keys" != e.empty() {
			t.Errorf("%s: empty() = %v", name, e.empty())
		}
		// What decodes encodes again (without the elective keys).
		if _, err := cd.encodeEnvelope(e); err != nil {
			t.Errorf("%s: decoded envelope does not encode: %v", name, err)
		}
	}

	bad := map[string]struct {
		b    []byte
		want string
	}{
		"must-understand key": {
			b: mustMarshal(t, cd, with(envMap(nil, []byte("m")), -3, 1)), want: "envelope has must-understand key -3"},
		"must-understand key in a fragment": {
			b: mustMarshal(t, cd, frag(-1, "x")), want: "envelope key 6 has must-understand key -1"},
		"must-understand key only": {
			b: mustMarshal(t, cd, map[int]any{1: 1, -2: true}), want: "must-understand key -2"},
		"text key": {
			b: rawPayload(t, cd, envMap(nil, []byte("m")), []byte{0x61, 'x', 0x01}), want: "major type 3"},
		"key 2^63": {
			b: rawPayload(t, cd, envMap(nil, []byte("m")), []byte{0x1b, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x01}), want: "outside"},
		"fragment not a map": {
			b: mustMarshal(t, cd, map[int]any{1: 1, 6: []any{1, 2}}), want: "envelope key 6 is not a map"},
		"duplicate elective key": {
			b: rawPayload(t, cd, envMap(nil, []byte("m")), []byte{0x07, 0x01}, []byte{0x07, 0x02}), want: "duplicate"},
		"duplicate key inside an elective value": {
			b: rawPayload(t, cd, envMap(nil, []byte("m")), []byte{0x07, 0x81, 0xa2, 0x01, 0x01, 0x18, 0x01, 0x02}), want: "duplicate"},
		"indefinite length in an elective value": {
			b: rawPayload(t, cd, envMap(nil, []byte("m")), []byte{0x07, 0x9f, 0x01, 0xff}), want: "indefinite"},
		"tag in an elective value": {
			b: rawPayload(t, cd, envMap(nil, []byte("m")), []byte{0x07, 0xc1, 0x01}), want: "tag"},
		"elective value nested too deep": {
			b: mustMarshal(t, cd, with(envMap(nil, []byte("m")), 7, nested(payloadMaxNesting))), want: "nested deeper"},
		"elective array over 4096 elements": {
			b: mustMarshal(t, cd, with(envMap(nil, []byte("m")), 7, make([]int, 4097))), want: "elements"},
		"elective value truncated": {
			b: rawPayload(t, cd, envMap(nil, []byte("m")), []byte{0x07, 0x65, 'a'}), want: "truncated"},
		"fragment with a message": {
			b: mustMarshal(t, cd, with(frag(), 3, []byte("m"))), want: "fragment with other envelope fields"},
		"nothing at all": {
			b: mustMarshal(t, cd, map[int]any{1: 1}), want: "envelope fields"},
		"key distribution without message, beside elective": {
			b: mustMarshal(t, cd, map[int]any{1: 1, 2: []byte("k"), 7: 1}), want: "envelope fields"},
		"version 2 with elective keys": {
			b: mustMarshal(t, cd, map[int]any{1: 2, 3: []byte("m"), 7: 1}), want: "envelope version 2"},
	}
	for name, c := range bad {
		_, err := cd.decodeEnvelope(c.b)
		if !errors.Is(err, ErrBadPayload) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want a bad envelope error containing %q", name, err, c.want)
		}
	}
}

// Envelopes of a newer client that carry elective keys this client does not know, at the top level, in a
// fragment and in the envelope the fragments make, are processed as usual: their messages are shown, in order,
// without gaps.
func TestEnvelopeWithElectiveKeysFromNewerClientIsShown(t *testing.T) {
	n := newerAliceToBob(t)
	b := n.to

	one := n.payload(1, 1)
	one[5] = "top-level elective keys"
	n.deliverEnvelope(newMessageID(), with(envMap(n.kd, n.seal(one)), 7, map[int]any{1: "priority", 2: []any{1, 2}}, 100, true))

	two := n.payload(1, 2)
	two[5] = "elective keys in fragments"
	whole := mustMarshal(t, b.eng.cd, with(envMap(n.kd, n.seal(two)), 8, "inside the reassembled envelope"))
	for _, f := range fragMaps(whole) {
		with(f, 7, "beside the fragment")
		with(f[6].(map[int]any), 9, map[int]any{1: "inside the fragment"})
		n.deliverEnvelope(newMessageID(), f)
	}

	msgs, gaps := received(t, b)
	if len(gaps) != 0 {
		t.Fatalf("gaps %+v", gaps)
	}
	if len(msgs) != 2 || msgs[0].Text != "top-level elective keys" || msgs[0].Seq != 1 ||
		msgs[1].Text != "elective keys in fragments" || msgs[1].Seq != 2 {
		t.Fatalf("bob was told of %+v, want the two texts", msgs)
	}
	if got := texts(t, b, n.conv); !slices.Equal(got, []string{"top-level elective keys", "elective keys in fragments"}) {
		t.Fatalf("bob's history shows %q", got)
	}
	if len(b.st.Keys(bucketFragSets)) != 0 || len(b.st.Keys(bucketFrags)) != 0 {
		t.Fatal("the fragment set is still kept after it was processed")
	}
}

// with adds the keys and values kv (key, value, key, value, …) to m and returns it.
func with(m map[int]any, kv ...any) map[int]any {
	for i := 0; i < len(kv); i += 2 {
		m[kv[i].(int)] = kv[i+1]
	}
	return m
}

// An envelope with a must-understand (negative) key this client does not know, at the top level, in a fragment
// or in the envelope the fragments make, is dropped with a log naming the key, nothing reaches the application,
// and it is acknowledged: receive returns nil and its message ID counts as processed, so a repeat is dropped too
// (no redelivery loop).
func TestEnvelopeWithMustUnderstandKeyIsDroppedAndAcknowledged(t *testing.T) {
	n := newerAliceToBob(t)
	b, logs := n.to, captureLog(n.to, slog.LevelInfo)

	one := n.payload(1, 1)
	one[5] = "must understand the envelope"
	top := newMessageID()
	n.deliverEnvelope(top, with(envMap(n.kd, n.seal(one)), -3, "route-via"))
	n.deliverEnvelope(top, with(envMap(n.kd, n.seal(one)), -3, "route-via")) // the grid delivers it again

	two := n.payload(1, 2)
	two[5] = "must understand the fragment"
	var fragIDs []wire.MessageID
	for i, f := range fragMaps(mustMarshal(t, b.eng.cd, envMap(n.kd, n.seal(two)))) {
		if i == 1 {
			with(f[6].(map[int]any), -1, "compressed")
		}
		fragIDs = append(fragIDs, newMessageID())
		n.deliverEnvelope(fragIDs[i], f)
	}

	three := n.payload(1, 3)
	three[5] = "must understand the reassembled envelope"
	var set []byte
	for _, f := range fragMaps(mustMarshal(t, b.eng.cd, with(envMap(n.kd, n.seal(three)), -5, "x"))) {
		set = f[6].(map[int]any)[1].([]byte)
		n.deliverEnvelope(newMessageID(), f)
	}

	msgs, _ := received(t, b)
	if len(msgs) != 0 {
		t.Fatalf("bob was told of %+v", msgs)
	}
	if hist, err := b.eng.messages(n.conv); err != nil || len(hist) != 0 {
		t.Fatalf("bob's history %+v, %v", hist, err)
	}
	for _, want := range []string{"envelope has must-understand key -3", "envelope key 6 has must-understand key -1",
		"envelope has must-understand key -5"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("bob's log does not say %q:\n%s", want, logs.String())
		}
	}
	if strings.Count(logs.String(), "must-understand key -3") != 1 {
		t.Errorf("the repeat of the refused envelope was processed again:\n%s", logs.String())
	}
	if !seen(b, top) || !seen(b, fragIDs[1]) || !seen(b, wire.MessageID(set)) {
		t.Fatal("a refused envelope's message ID does not count as processed: the grid would deliver it again")
	}
	// The refused fragment's set waits for it as any incomplete set does (dropped after fragmentKeep); the
	// refused reassembled envelope's set is gone.
	for _, k := range b.st.Keys(bucketFragSets) {
		if strings.HasSuffix(k, hex.EncodeToString(set)) {
			t.Fatal("the refused reassembled envelope's fragment set is still kept")
		}
	}
}

// An envelope that carries only elective keys (a later version's signal, say), alone or as fragments, is
// nothing for this client: acknowledged and dropped (logged at debug), and the messages around it are shown
// in order with no gap.
func TestEnvelopeWithOnlyElectiveContentIsAcknowledged(t *testing.T) {
	n := newerAliceToBob(t)
	b, logs := n.to, captureLog(n.to, slog.LevelDebug)

	signal := newMessageID()
	n.deliverEnvelope(signal, map[int]any{1: 1, 7: map[int]any{1: "typing"}})
	if _, ok := b.eng.conv(n.conv); ok {
		t.Fatal("an envelope with only elective keys created the conversation")
	}
	one := n.payload(1, 1)
	one[5] = "one"
	n.deliverEnvelope(newMessageID(), envMap(n.kd, n.seal(one)))
	var set []byte
	for _, f := range fragMaps(mustMarshal(t, b.eng.cd, map[int]any{1: 1, 7: "x", 8: bytes.Repeat([]byte("a later version's data"), 10)})) {
		set = f[6].(map[int]any)[1].([]byte)
		n.deliverEnvelope(newMessageID(), f)
	}
	two := n.payload(1, 2)
	two[5] = "two"
	n.deliverEnvelope(newMessageID(), envMap(n.kd, n.seal(two)))

	msgs, gaps := received(t, b)
	if len(gaps) != 0 {
		t.Fatalf("gap events %+v", gaps)
	}
	if len(msgs) != 2 || msgs[0].Text != "one" || msgs[0].Seq != 1 || msgs[1].Text != "two" || msgs[1].Seq != 2 {
		t.Fatalf("bob was told of %+v, want the two texts only", msgs)
	}
	if !seen(b, signal) || !seen(b, wire.MessageID(set)) || len(b.st.Keys(bucketFragSets)) != 0 {
		t.Fatal("an envelope with only elective keys was not acknowledged")
	}
	if got := strings.Count(logs.String(), "level=DEBUG msg=\"ignoring envelope with only elective keys"); got != 2 {
		t.Errorf("bob logged %d envelopes with only elective keys at debug, want 2:\n%s", got, logs.String())
	}
	if strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("bob warned of an envelope with only elective keys:\n%s", logs.String())
	}
}

// newerGroupRecord is a group-state record as a newer client's admin device dev signs it: body and record are
// maps the test adds to (zero values: none), the body encoded and signed as it is.
func newerGroupRecord(t *testing.T, cd codec, dev *e2ee.DeviceKeys, g *GroupState, body, record map[int]any) []byte {
	t.Helper()
	accts := func(as []e2ee.AccountID) [][]byte {
		var out [][]byte
		for _, a := range as {
			out = append(out, bytes.Clone(a[:]))
		}
		return out
	}
	gb := map[int]any{1: 1, 2: g.Conversation[:], 3: g.Version, 4: g.Prev[:], 5: g.Name, 6: accts(g.Members),
		7: accts(g.Admins), 8: g.Signer[:], 9: g.Time.Unix()}
	for k, v := range body {
		gb[k] = v
	}
	bb := mustMarshal(t, cd, gb)
	req, err := e2ee.SignRequest(dev, GroupStatePurpose, bb, g.Time)
	if err != nil {
		t.Fatal(err)
	}
	rec := map[int]any{1: bb, 2: req.Encode()}
	for k, v := range record {
		rec[k] = v
	}
	return mustMarshal(t, cd, rec)
}

func TestGroupStateIgnoresUnknownElectiveKeys(t *testing.T) {
	cd := mustCodec(t)
	now := time.Now()
	dk, _ := e2ee.NewDeviceKeys(now)
	c, _ := e2ee.NewAccount(dk, now)
	st, _ := e2ee.Replay(c)
	conv, _ := e2ee.NewConversationID()
	g := &GroupState{Conversation: conv, Version: 1, Name: "g", Members: []e2ee.AccountID{st.Account},
		Admins: []e2ee.AccountID{st.Account}, Signer: st.Account, Time: now.UTC().Truncate(time.Second)}
	good := map[string][2]map[int]any{
		"elective keys in the body":   {{10: "description", 11: map[int]any{1: []any{"x"}}, 64: true}, nil},
		"elective keys in the record": {nil, {3: []byte("a second signature"), 0: 1}},
		"both":                        {{0: nil}, {100: map[any]any{"k": 1}}},
	}
	for name, kv := range good {
		rec := newerGroupRecord(t, cd, dk, g, kv[0], kv[1])
		got, err := cd.verifyGroupState(rec, nil, nil, st)
		if err != nil {
			t.Errorf("%s: refused: %v", name, err)
			continue
		}
		if got.Name != "g" || got.Version != 1 || !got.IsAdmin(st.Account) || !got.Time.Equal(g.Time) {
			t.Errorf("%s: decoded %+v", name, got)
		}
	}
	bad := map[string]struct {
		kv   [2]map[int]any
		want string
	}{
		"must-understand key in the body":   {[2]map[int]any{{-4: "expires"}, nil}, "group-state body has must-understand key -4"},
		"must-understand key in the record": {[2]map[int]any{nil, {-2: "x"}}, "group-state record has must-understand key -2"},
		"elective value nested too deep":    {[2]map[int]any{{10: nested(payloadMaxNesting)}, nil}, "nested deeper"},
		"elective map over 32 pairs": {[2]map[int]any{nil, {3: func() map[int]any {
			m := map[int]any{}
			for i := range 33 {
				m[i] = i
			}
			return m
		}()}}, "pairs"},
	}
	for name, c := range bad {
		_, _, _, err := cd.decodeGroupState(newerGroupRecord(t, cd, dk, g, c.kv[0], c.kv[1]))
		if !errors.Is(err, ErrBadGroupState) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want a bad group-state error containing %q", name, err, c.want)
		}
	}
	// A duplicate key and a non-integer key, which the encoder does not write.
	ok := newerGroupRecord(t, cd, dk, g, nil, nil)
	for name, pair := range map[string][]byte{"duplicate key": {0x01, 0x40}, "text key": {0x61, 'x', 0x01}} {
		rec := append([]byte{ok[0] + 1}, ok[1:]...)
		if _, _, _, err := cd.decodeGroupState(append(rec, pair...)); !errors.Is(err, ErrBadGroupState) {
			t.Errorf("%s in the record: got %v, want ErrBadGroupState", name, err)
		}
	}
}

// A group-state record of a newer admin's client, with elective keys in its signed body and in the record, is
// applied by this client, kept as the bytes received, and forwarded as them: a member this client reaches first
// verifies it, and the version this client signs next names its hash, which the newer admin's device (holding
// the original) accepts. A must-understand key refuses the record, as a first record and as a successor.
func TestGroupStateWithElectiveKeysAppliesAndIsForwardedVerbatim(t *testing.T) {
	net := newMemNet()
	alice, _ := newAccount(t, net, "alice", e2ee.RenewalPolicy{})
	bob, _ := newAccount(t, net, "bob", e2ee.RenewalPolicy{})
	carol, _ := newAccount(t, net, "carol", e2ee.RenewalPolicy{})
	dave, _ := newAccount(t, net, "dave", e2ee.RenewalPolicy{})
	var logs lockedBuffer
	bob.eng.cfg.log = slog.New(slog.NewTextHandler(&logs, nil))
	all := []*device{alice, bob, carol, dave}
	sorted := func(ds ...*device) []e2ee.AccountID {
		var out []e2ee.AccountID
		for _, d := range ds {
			out = append(out, d.eng.self)
		}
		slices.SortFunc(out, cmpAccount)
		return out
	}
	conv, _ := e2ee.NewConversationID()
	g1 := &GroupState{Conversation: conv, Version: 1, Name: "newer", Members: sorted(alice, bob, carol),
		Admins: sorted(alice, bob), Signer: alice.eng.self, Time: time.Now().UTC().Truncate(time.Second)}
	rec1 := newerGroupRecord(t, alice.eng.cd, alice.keys, g1,
		map[int]any{10: "a description", 11: map[int]any{1: []any{"pinned"}}}, map[int]any{3: []byte("co-signature")})
	if err := alice.eng.ensureConv(conv, &convRecord{Kind: Group, Group: rec1}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.eng.send(context.Background(), conv, &payload{Type: PayloadGroupState, Group: rec1}, sendOpts{}); err != nil {
		t.Fatal(err)
	}
	// Carol misses it: bob is the first to tell her of the group.
	net.mu.Lock()
	delete(net.inbox, carol.keys.ID())
	net.mu.Unlock()
	deliver(t, alice, bob)
	r, ok := bob.eng.conv(conv)
	if !ok || !bytes.Equal(r.Group, rec1) {
		t.Fatalf("bob keeps %x, want the record as received", r.Group)
	}
	if c, err := bob.eng.conversation(conv); err != nil || c.Group == nil || c.Group.Name != "newer" || c.Group.Version != 1 {
		t.Fatalf("bob's conversation %+v, %v", c, err)
	}

	// Bob's first message in the group carries the record (it carries his session's key distribution).
	sendText(t, bob, conv, "bob forwards the record")
	deliver(t, all...)
	for _, d := range []*device{alice, carol} {
		if got := texts(t, d, conv); !slices.Equal(got, []string{"bob forwards the record"}) {
			t.Fatalf("%x shows %q", d.eng.self[:4], got)
		}
	}
	if r, ok := carol.eng.conv(conv); !ok || !bytes.Equal(r.Group, rec1) {
		t.Fatal("carol does not keep the record bob forwarded as alice signed it")
	}

	// Bob adds dave: version 2 names the hash of the record as bob keeps it.
	r, _ = bob.eng.conv(conv)
	cur, _, _, err := bob.eng.cd.decodeGroupState(r.Group)
	if err != nil {
		t.Fatal(err)
	}
	g2 := *cur
	g2.Members = sorted(alice, bob, carol, dave)
	g2.Version, g2.Prev, g2.Signer, g2.Time = 2, mustGroupHash(t, bob.eng.cd, r.Group), bob.eng.self, time.Now().UTC()
	rec2, err := bob.eng.cd.signGroupState(bob.keys, &g2)
	if err != nil {
		t.Fatal(err)
	}
	r.Group = rec2
	if err := bob.st.Update(func(b *store.Batch) error { return bob.eng.putConv(b, conv, r) }); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.eng.send(context.Background(), conv, &payload{Type: PayloadGroupState, Group: rec2}, sendOpts{}); err != nil {
		t.Fatal(err)
	}
	deliver(t, all...)
	for _, d := range all {
		c, err := d.eng.conversation(conv)
		if err != nil || c.Group == nil || c.Group.Version != 2 || !c.Group.IsMember(dave.eng.self) {
			t.Fatalf("%x holds %+v (%v), want version 2 with dave", d.eng.self[:4], c.Group, err)
		}
	}

	// A version 3 from the newer admin with a must-understand key is refused: bob stays at version 2.
	g3 := g2
	g3.Version, g3.Prev, g3.Signer, g3.Time, g3.Name = 3, mustGroupHash(t, alice.eng.cd, rec2), alice.eng.self, time.Now().UTC(), "renamed"
	rec3 := newerGroupRecord(t, alice.eng.cd, alice.keys, &g3, map[int]any{-4: "expires"}, nil)
	if _, err := alice.eng.send(context.Background(), conv, &payload{Type: PayloadGroupState, Group: rec3}, sendOpts{}); err != nil {
		t.Fatal(err)
	}
	bob.eng.ev.take()
	deliver(t, alice, bob)
	if c, _ := bob.eng.conversation(conv); c.Group == nil || c.Group.Version != 2 {
		t.Fatalf("bob applied %+v, want version 2 kept", c.Group)
	}
	if msgs, _ := received(t, bob); len(msgs) != 0 {
		t.Fatalf("bob was told of %+v", msgs)
	}
	if !strings.Contains(logs.String(), "group-state body has must-understand key -4") {
		t.Errorf("bob's log does not name the must-understand key:\n%s", logs.String())
	}

	// As the first record of a group, from a member this client never heard of it from.
	conv2, _ := e2ee.NewConversationID()
	g := *g1
	g.Conversation = conv2
	recX := newerGroupRecord(t, alice.eng.cd, alice.keys, &g, nil, map[int]any{-2: "x"})
	if err := alice.eng.ensureConv(conv2, &convRecord{Kind: Group, Group: newerGroupRecord(t, alice.eng.cd, alice.keys, &g, nil, nil)}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.eng.send(context.Background(), conv2, &payload{Type: PayloadGroupState, Group: recX}, sendOpts{}); err != nil {
		t.Fatal(err)
	}
	deliver(t, alice, bob)
	if _, ok := bob.eng.conv(conv2); ok {
		t.Fatal("bob made a group from a record with a must-understand key")
	}
	if !strings.Contains(logs.String(), "group-state record has must-understand key -2") {
		t.Errorf("bob's log does not name the must-understand key:\n%s", logs.String())
	}
}

// BenchmarkDecodeEnvelope measures decodeEnvelope on a typical envelope (one sealed message, as every envelope
// of a running session) and on the first envelope of a session (a key distribution chunk, the sender's signed
// messaging key and the message), beside its baseline in the same run: the strict struct decoder (unknown keys
// refused) and the field checks, as envelopes were decoded before elective keys.
func BenchmarkDecodeEnvelope(b *testing.B) {
	cd := mustCodec(b)
	msg := bytes.Repeat([]byte{0x5a}, 420)
	for _, tc := range []struct {
		name string
		env  *envelope
	}{
		{"message", &envelope{Message: msg}},
		{"first", &envelope{KeyDist: bytes.Repeat([]byte{0x4b}, 3800), Message: msg, Keys: [][]byte{bytes.Repeat([]byte{0x6b}, 1343)}}},
	} {
		enc, err := cd.encodeEnvelope(tc.env)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(tc.name+"/baseline=strict-struct", func(b *testing.B) {
			for b.Loop() {
				var e envelope
				if err := cd.dec.Unmarshal(enc, &e); err != nil {
					b.Fatal(err)
				}
				if e.V != EnvelopeVersion || e.Frag != nil || len(e.Message) == 0 || len(e.Message) > maxMessageBytes ||
					len(e.KeyDist) > maxKeyDistBytes || len(e.Keys) > maxEnvelopeKeys {
					b.Fatal("envelope fields")
				}
			}
		})
		b.Run(tc.name+"/decodeEnvelope", func(b *testing.B) {
			for b.Loop() {
				if _, err := cd.decodeEnvelope(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
