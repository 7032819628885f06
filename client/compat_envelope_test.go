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

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/wire"
)

// Forward compatibility of client envelopes (docs/PROTOCOL.md §9.1 "Extensions"): what a newer client may put
// in them that this one does not know, and how this one treats it. The rule is the payload's (§9.3,
// compat_test.go).

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
	net := newMemNet()
	a, _ := newAccount(t, net, "alice", e2ee.RenewalPolicy{})
	b, _ := newAccount(t, net, "bob", e2ee.RenewalPolicy{})
	n := newNewerClient(t, a, b)

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
	net := newMemNet()
	a, _ := newAccount(t, net, "alice", e2ee.RenewalPolicy{})
	b, _ := newAccount(t, net, "bob", e2ee.RenewalPolicy{})
	var logs lockedBuffer
	b.eng.cfg.log = slog.New(slog.NewTextHandler(&logs, nil))
	n := newNewerClient(t, a, b)

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
	net := newMemNet()
	a, _ := newAccount(t, net, "alice", e2ee.RenewalPolicy{})
	b, _ := newAccount(t, net, "bob", e2ee.RenewalPolicy{})
	var logs lockedBuffer
	b.eng.cfg.log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	n := newNewerClient(t, a, b)

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
