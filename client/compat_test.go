package client

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iagon/gridchat/e2ee"
)

// Forward compatibility of payloads (docs/PROTOCOL.md §9.3 "Extensions"): what a newer client may put in a
// payload that this one does not know, and how this one treats it.

const futureSentMS = int64(1_700_000_000_000)

// textMap is a text payload as a map, for a test to add what a newer client would.
func textMap(seq uint64, text string) map[int]any {
	return map[int]any{1: 1, 2: 1, 3: seq, 4: futureSentMS, 5: text}
}

// rawPayload encodes m and appends pairs, each one encoded key followed by its encoded value, to its map: what
// the encoder would not write (an indefinite length, a tag, a duplicate key, a non-integer key).
func rawPayload(t *testing.T, cd codec, m map[int]any, pairs ...[]byte) []byte {
	t.Helper()
	b, err := cd.enc.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	n := len(m) + len(pairs)
	if n >= 24 || b[0] != 0xa0|byte(len(m)) {
		t.Fatalf("rawPayload: map of %d pairs", n)
	}
	out := append([]byte{0xa0 | byte(n)}, b[1:]...)
	for _, p := range pairs {
		out = append(out, p...)
	}
	return out
}

// nested returns an elective value of depth arrays, one inside the other, around the integer 1.
func nested(depth int) any {
	var v any = 1
	for range depth {
		v = []any{v}
	}
	return v
}

func TestPayloadIgnoresUnknownElectiveKeysWithinLimits(t *testing.T) {
	cd := mustCodec(t)
	with := func(m map[int]any, k int, v any) map[int]any { m[k] = v; return m }
	bodyWith := func(m map[int]any, body, k int, v any) map[int]any { m[body].(map[int]any)[k] = v; return m }
	attachment := func() map[int]any {
		return map[int]any{1: 1, 2: 2, 3: 1, 4: futureSentMS, 6: map[int]any{1: "a.txt", 2: "text/plain", 3: []byte("x")}}
	}
	resend := func() map[int]any {
		return map[int]any{1: 1, 2: 4, 4: futureSentMS, 8: map[int]any{1: make([]byte, 32), 3: 1}}
	}
	history := func() map[int]any {
		return map[int]any{1: 1, 2: 5, 4: futureSentMS, 9: map[int]any{1: make([]byte, 16), 2: 0, 4: []byte("d"), 5: []byte("k")}}
	}
	good := map[string]map[int]any{
		"scalar":                     with(textMap(1, "hi"), 14, 7),
		"map with arrays and maps":   with(textMap(1, "hi"), 14, map[any]any{"a": []any{1, map[int]any{-1: "x"}}, 2: 1.5}),
		"null":                       with(textMap(1, "hi"), 20, nil),
		"key 0":                      with(textMap(1, "hi"), 0, "zero"),
		"key 63":                     with(textMap(1, "hi"), 63, true),
		"key 64":                     with(textMap(1, "hi"), 64, []byte{1}),
		"key 2^63-1":                 with(textMap(1, "hi"), math.MaxInt64, "max"),
		"value at the nesting limit": with(textMap(1, "hi"), 14, nested(payloadMaxNesting-1)),
		"32 keys in all": func() map[int]any {
			m := textMap(1, "hi")
			for k := 100; len(m) < 32; k++ {
				m[k] = k
			}
			return m
		}(),
		"in the attachment body":         bodyWith(attachment(), 6, 4, map[int]any{1: "thumbnail"}),
		"in the attachment and top":      with(bodyWith(attachment(), 6, 9, 1), 30, 2),
		"in the resend body":             bodyWith(resend(), 8, 4, []any{1, 2}),
		"in the history body":            bodyWith(history(), 9, 6, "x"),
		"in a body, beyond 64":           bodyWith(history(), 9, 1000, "x"),
		"unknown numbered type":          {1: 1, 2: 42, 3: 7, 4: futureSentMS, 11: 1, 12: make([]byte, 32), 13: 9, 10: true, 40: "x"},
		"unknown unnumbered type":        {1: 1, 2: 43, 4: futureSentMS, 40: map[int]any{1: 2}},
		"unknown type 255 with a body":   {1: 1, 2: 255, 4: futureSentMS, 6: map[int]any{1: "a", 2: "b", 3: []byte("c"), 4: 1}},
		"unknown type with a group body": {1: 1, 2: 42, 3: 1, 4: futureSentMS, 7: []byte("group record")},
	}
	for name, m := range good {
		b, err := cd.enc.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		p, err := cd.decodePayload(b)
		if err != nil {
			t.Errorf("%s: refused: %v", name, err)
			continue
		}
		if p.Type == PayloadText && p.Text != "hi" {
			t.Errorf("%s: text %q", name, p.Text)
		}
		if p.numbered() != (m[3] != nil) {
			t.Errorf("%s: numbered %v with key 3 %v", name, p.numbered(), m[3])
		}
		// What decodes satisfies every invariant the encoder checks.
		if _, err := cd.encodePayload(p); err != nil {
			t.Errorf("%s: decoded payload does not encode: %v", name, err)
		}
	}

	key14 := []byte{0x0e}
	bad := map[string]struct {
		b    []byte
		want string
	}{
		"must-understand key": {
			b: mustMarshal(t, cd, with(textMap(1, "hi"), -7, 1)), want: "payload has must-understand key -7"},
		"must-understand key in a body": {
			b: mustMarshal(t, cd, bodyWith(attachment(), 6, -2, 1)), want: "payload key 6 has must-understand key -2"},
		"must-understand key in the history body": {
			b: mustMarshal(t, cd, bodyWith(history(), 9, -1, 1)), want: "payload key 9 has must-understand key -1"},
		"negative key below -2^63": {
			b: rawPayload(t, cd, textMap(1, "hi"), []byte{0x3b, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x01}), want: "outside"},
		"key 2^63": {
			b: rawPayload(t, cd, textMap(1, "hi"), []byte{0x1b, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x01}), want: "outside"},
		"text key": {
			b: rawPayload(t, cd, textMap(1, "hi"), []byte{0x61, 'x', 0x01}), want: "major type 3"},
		"byte string key": {
			b: rawPayload(t, cd, textMap(1, "hi"), []byte{0x41, 0x01, 0x01}), want: "major type 2"},
		"float key": {
			b: rawPayload(t, cd, textMap(1, "hi"), []byte{0xf9, 0x3c, 0x00, 0x01}), want: "major type 7"},
		"text key in a body": {
			b: rawPayload(t, cd, map[int]any{1: 1, 2: 2, 3: 1, 4: futureSentMS},
				[]byte{0x06, 0xa4, 0x01, 0x61, 'a', 0x02, 0x61, 'b', 0x03, 0x41, 'c', 0x61, 'x', 0x01}), want: "payload key 6 has a key of CBOR major type 3"},
		"body not a map": {
			b: mustMarshal(t, cd, map[int]any{1: 1, 2: 2, 3: 1, 4: futureSentMS, 6: []any{"a", "b", []byte("c")}}), want: "payload key 6 is not a map"},
		"duplicate elective key": {
			b: rawPayload(t, cd, textMap(1, "hi"), []byte{0x0e, 0x01}, []byte{0x0e, 0x02}), want: "duplicate"},
		"duplicate key inside an elective value": {
			b: rawPayload(t, cd, textMap(1, "hi"), append(key14, 0x81, 0xa2, 0x01, 0x01, 0x18, 0x01, 0x02)), want: "duplicate"},
		"duplicate elective key in a body": {
			b: rawPayload(t, cd, map[int]any{1: 1, 2: 2, 3: 1, 4: futureSentMS},
				[]byte{0x06, 0xa5, 0x01, 0x61, 'a', 0x02, 0x61, 'b', 0x03, 0x41, 'c', 0x04, 0x01, 0x04, 0x02}), want: "duplicate"},
		"array as a key inside an elective value": {
			b: rawPayload(t, cd, textMap(1, "hi"), append(key14, 0xa1, 0x81, 0x01, 0x02)), want: "map key"},
		"indefinite length in an elective value": {
			b: rawPayload(t, cd, textMap(1, "hi"), append(key14, 0x9f, 0x01, 0xff)), want: "indefinite"},
		"indefinite string in an elective value": {
			b: rawPayload(t, cd, textMap(1, "hi"), append(key14, 0x7f, 0x61, 'a', 0xff)), want: "indefinite"},
		"tag in an elective value": {
			b: rawPayload(t, cd, textMap(1, "hi"), append(key14, 0xc1, 0x01)), want: "tag"},
		"elective value nested too deep": {
			b: mustMarshal(t, cd, with(textMap(1, "hi"), 14, nested(payloadMaxNesting))), want: "nested deeper"},
		"elective map over 32 pairs": {
			b: mustMarshal(t, cd, with(textMap(1, "hi"), 14, func() map[int]any {
				m := map[int]any{}
				for i := range 33 {
					m[i] = i
				}
				return m
			}())), want: "pairs"},
		"elective array over 4096 elements": {
			b: mustMarshal(t, cd, with(textMap(1, "hi"), 14, make([]int, 4097))), want: "elements"},
		"33 keys in all": {
			b: mustMarshal(t, cd, func() map[int]any {
				m := textMap(1, "hi")
				for k := 100; len(m) < 33; k++ {
					m[k] = k
				}
				return m
			}()), want: "pairs"},
		"elective value truncated": {
			b: rawPayload(t, cd, textMap(1, "hi"), append(key14, 0x65, 'a')), want: "truncated"},
		"seq 0 present": {
			b: mustMarshal(t, cd, with(resend(), 3, 0)), want: "sequence number 0"},
		"type 0": {
			b: mustMarshal(t, cd, map[int]any{1: 1, 2: 0, 4: futureSentMS}), want: "type 0"},
		"type 256": {
			b: mustMarshal(t, cd, map[int]any{1: 1, 2: 256, 4: futureSentMS}), want: "overflows"},
		"unknown type with a counter and no seq": {
			b: mustMarshal(t, cd, map[int]any{1: 1, 2: 42, 4: futureSentMS, 13: 5}), want: "counter"},
		"unknown type resent without seq": {
			b: mustMarshal(t, cd, map[int]any{1: 1, 2: 42, 4: futureSentMS, 10: true}), want: "resent"},
		"unknown type with a group record and no seq": {
			b: mustMarshal(t, cd, map[int]any{1: 1, 2: 42, 4: futureSentMS, 7: []byte("g")}), want: "group record"},
		"unknown type with a bad resend body": {
			b: mustMarshal(t, cd, map[int]any{1: 1, 2: 42, 3: 1, 4: futureSentMS, 8: map[int]any{1: []byte("short"), 3: 1}}), want: "resend request"},
		"unknown type, version 2": {
			b: mustMarshal(t, cd, map[int]any{1: 2, 2: 42, 4: futureSentMS}), want: "version 2"},
	}
	for name, c := range bad {
		_, err := cd.decodePayload(c.b)
		if !errors.Is(err, ErrBadPayload) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want a bad payload error containing %q", name, err, c.want)
		}
	}
}

func mustMarshal(t *testing.T, cd codec, v any) []byte {
	t.Helper()
	b, err := cd.enc.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newerClient is a device of a client version later than this one: it seals payloads the test builds by hand,
// in its own session of a direct conversation, and hands the envelopes to the receiving device's engine.
type newerClient struct {
	t      *testing.T
	from   *device
	to     *device
	conv   e2ee.ConversationID
	sender *e2ee.Sender
	kd     []byte
}

// newerAliceToBob makes accounts alice and bob on an in-memory grid and a newer client on alice's device that
// sends to bob's (n.to).
func newerAliceToBob(t *testing.T) *newerClient {
	t.Helper()
	net := newMemNet()
	a, _ := newAccount(t, net, "alice", e2ee.RenewalPolicy{})
	b, _ := newAccount(t, net, "bob", e2ee.RenewalPolicy{})
	return newNewerClient(t, a, b)
}

// captureLog sends what d's engine logs at level or above to the returned buffer.
func captureLog(d *device, level slog.Level) *lockedBuffer {
	logs := new(lockedBuffer)
	d.eng.cfg.log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: level}))
	return logs
}

func newNewerClient(t *testing.T, from, to *device) *newerClient {
	t.Helper()
	conv := DirectConversationID(from.eng.self, to.eng.self)
	s, err := e2ee.NewSession(conv, 1)
	if err != nil {
		t.Fatal(err)
	}
	rk, err := from.net.recipientKey(context.Background(), to.keys.Public())
	if err != nil {
		t.Fatal(err)
	}
	kd, err := e2ee.Distribute(from.keys, s, []e2ee.RecipientKey{rk})
	if err != nil {
		t.Fatal(err)
	}
	snd, err := s.Sender(from.keys)
	if err != nil {
		t.Fatal(err)
	}
	return &newerClient{t: t, from: from, to: to, conv: conv, sender: snd, kd: kd.Encode()}
}

// payload is a numbered payload (seq > 0) or an unnumbered one (seq 0) of type typ as the newer client fills
// it in for this conversation; the test adds what it wants to it.
func (n *newerClient) payload(typ int, seq uint64) map[int]any {
	m := map[int]any{1: 1, 2: typ, 4: time.Now().UnixMilli(), 12: n.to.eng.self[:]}
	if seq > 0 {
		m[3], m[11], m[13] = seq, 1, uint64(time.Now().UnixMilli())+seq
	}
	return m
}

// send seals m (or, for a []byte, those bytes) and has the receiving device's engine process the envelope.
func (n *newerClient) send(m any) {
	n.t.Helper()
	pt, ok := m.([]byte)
	if !ok {
		pt = mustMarshal(n.t, n.to.eng.cd, m)
	}
	msg, err := n.sender.Seal(pt)
	if err != nil {
		n.t.Fatal(err)
	}
	env, err := n.to.eng.cd.encodeEnvelope(&envelope{KeyDist: n.kd, Message: msg.Encode()})
	if err != nil {
		n.t.Fatal(err)
	}
	if err := n.to.eng.receive(context.Background(), newMessageID(), n.from.keys.ID(), env); err != nil {
		n.t.Fatalf("receive: %v", err)
	}
}

// received returns the messages the device's application was told of and the gap events, and fails the test
// if the device asked anybody to resend anything.
func received(t *testing.T, d *device) (msgs []Message, gaps []*GapEvent) {
	t.Helper()
	for _, ev := range d.eng.ev.take() {
		switch ev := ev.(type) {
		case *MessageEvent:
			msgs = append(msgs, ev.Message)
		case *GapEvent:
			gaps = append(gaps, ev)
		}
	}
	d.mu.Lock()
	queued := len(d.tasks)
	d.mu.Unlock()
	if queued != 0 {
		t.Errorf("the device queued %d sends (a resend request)", queued)
	}
	return msgs, gaps
}

// A text and an attachment from a newer client that carry elective keys this client does not know, at the top
// level and inside the attachment, are shown as usual.
func TestPayloadWithElectiveKeysFromNewerClientIsShown(t *testing.T) {
	n := newerAliceToBob(t)
	b := n.to

	text := n.payload(1, 1)
	text[5] = "hello from a newer client"
	text[14] = map[int]any{1: "reply-to", 2: []any{1, 2, map[int]any{3: "x"}}}
	text[200] = true
	n.send(text)
	att := n.payload(2, 2)
	att[6] = map[int]any{1: "a.txt", 2: "text/plain", 3: []byte("data"), 4: map[int]any{1: "thumbnail"}, 70: 1}
	att[15] = "caption"
	n.send(att)

	msgs, gaps := received(t, b)
	if len(gaps) != 0 {
		t.Fatalf("gaps %+v", gaps)
	}
	if len(msgs) != 2 || msgs[0].Text != "hello from a newer client" || msgs[0].Unsupported || msgs[0].Seq != 1 ||
		msgs[1].Attachment == nil || !bytes.Equal(msgs[1].Attachment.Data, []byte("data")) || msgs[1].Unsupported {
		t.Fatalf("bob was told of %+v, want the text and the attachment", msgs)
	}
	hist, err := b.eng.messages(n.conv)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 2 || hist[0].Text != "hello from a newer client" || hist[1].Attachment == nil || hist[1].Attachment.Name != "a.txt" {
		t.Fatalf("bob's history %+v", hist)
	}
}

// lockedBuffer is a log destination the test reads while the engine writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A payload with a must-understand (negative) key this client does not know is refused, at the top level or
// inside a body, with an error that names the key, and nothing reaches the application.
func TestPayloadWithUnknownMustUnderstandKeyIsRefused(t *testing.T) {
	n := newerAliceToBob(t)
	b, logs := n.to, captureLog(n.to, slog.LevelInfo)

	text := n.payload(1, 1)
	text[5] = "you must understand this"
	text[-7] = "expires-at"
	n.send(text)
	att := n.payload(2, 2)
	att[6] = map[int]any{1: "a.txt", 2: "text/plain", 3: []byte("data"), -2: "encrypted-with"}
	n.send(att)

	msgs, _ := received(t, b)
	if len(msgs) != 0 {
		t.Fatalf("bob was told of %+v", msgs)
	}
	if hist, err := b.eng.messages(n.conv); err != nil || len(hist) != 0 {
		t.Fatalf("bob's history %+v, %v", hist, err)
	}
	for _, want := range []string{"payload has must-understand key -7", "payload key 6 has must-understand key -2"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("bob's log does not say %q:\n%s", want, logs.String())
		}
	}
	_, err := b.eng.cd.decodePayload(mustMarshal(t, b.eng.cd, text))
	if !errors.Is(err, ErrBadPayload) || !strings.Contains(err.Error(), "-7") {
		t.Fatalf("decodePayload: %v, want ErrBadPayload naming key -7", err)
	}
}

// A numbered payload of a type this client does not know counts as received: the text after it shows no gap
// and asks for no resend, and the unknown one reaches the application (and the history) as unsupported. The
// history keeps its payload, which a later version that knows the type shows.
func TestUnknownNumberedTypeCountsAsReceivedAndIsSurfaced(t *testing.T) {
	n := newerAliceToBob(t)
	b := n.to

	one := n.payload(1, 1)
	one[5] = "one"
	n.send(one)
	poll := n.payload(42, 2)
	poll[5] = "a fallback text this client does not show"
	poll[30] = map[int]any{1: "question", 2: []any{"yes", "no"}}
	n.send(poll)
	three := n.payload(1, 3)
	three[5] = "three"
	n.send(three)
	// The same unknown message again, under another message ID: a duplicate, not shown twice.
	n.send(poll)

	msgs, gaps := received(t, b)
	if len(gaps) != 0 {
		t.Fatalf("gap events %+v after an unknown numbered type", gaps)
	}
	if len(msgs) != 3 || msgs[0].Text != "one" || msgs[2].Text != "three" {
		t.Fatalf("bob was told of %+v", msgs)
	}
	if u := msgs[1]; !u.Unsupported || u.Type != 42 || u.Seq != 2 || u.Text != "" || u.Clock != poll[13] {
		t.Fatalf("the unknown message surfaced as %+v", u)
	}
	hist, err := b.eng.messages(n.conv)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 3 || !hist[1].Unsupported || hist[1].Type != 42 || hist[1].Seq != 2 || hist[2].Text != "three" {
		t.Fatalf("bob's history %+v", hist)
	}
	key, mr := storedMessage(t, b, n.conv, 2)
	if kp, err := b.eng.cd.decodePayload(mr.Payload); err != nil || kp.Type != 42 || kp.Seq != 2 {
		t.Fatalf("the history keeps payload %x (%+v, %v), want the unknown payload itself", mr.Payload, kp, err)
	}

	// A later version that knows the type shows what an earlier one kept. Here: the record as a version that
	// did not know type 1 (text) would have kept a text.
	text := n.payload(1, 2)
	text[5] = "kept by an older version"
	mr.Type, mr.Payload = PayloadText, mustMarshal(t, b.eng.cd, text)
	if err := b.st.Put(msgBucket(n.conv), key, mustMarshal(t, b.eng.cd, mr)); err != nil {
		t.Fatal(err)
	}
	hist, err = b.eng.messages(n.conv)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 3 || hist[1].Unsupported || hist[1].Text != "kept by an older version" || hist[1].Seq != 2 {
		t.Fatalf("the kept payload shows as %+v", hist[1])
	}
}

// storedMessage returns the history record of the message numbered seq in conv, and its key.
func storedMessage(t *testing.T, d *device, conv e2ee.ConversationID, seq uint64) (string, msgRecord) {
	t.Helper()
	for _, k := range d.st.Keys(msgBucket(conv)) {
		v, _ := d.st.Get(msgBucket(conv), k)
		var mr msgRecord
		if err := d.eng.cd.dec.Unmarshal(v, &mr); err != nil {
			t.Fatal(err)
		}
		if mr.Seq == seq {
			return k, mr
		}
	}
	t.Fatalf("no message numbered %d in the history", seq)
	return "", msgRecord{}
}

// An unnumbered payload of a type this client does not know is a later version's signal: ignored (not shown,
// not kept, no conversation made for it), and the numbering is left alone.
func TestUnknownUnnumberedTypeIsIgnoredWithoutDisturbingNumbering(t *testing.T) {
	n := newerAliceToBob(t)
	b := n.to

	// The first payload of the conversation is the unknown one (a typing indicator of a later version, say):
	// it neither creates the conversation nor reaches the application.
	typing := n.payload(43, 0)
	typing[20] = map[int]any{1: true}
	n.send(typing)
	if _, ok := b.eng.conv(n.conv); ok {
		t.Fatal("an unknown unnumbered payload created the conversation")
	}
	one := n.payload(1, 1)
	one[5] = "one"
	n.send(one)
	n.send(n.payload(43, 0))
	two := n.payload(1, 2)
	two[5] = "two"
	n.send(two)

	msgs, gaps := received(t, b)
	if len(gaps) != 0 {
		t.Fatalf("gap events %+v", gaps)
	}
	if len(msgs) != 2 || msgs[0].Text != "one" || msgs[0].Seq != 1 || msgs[1].Text != "two" || msgs[1].Seq != 2 {
		t.Fatalf("bob was told of %+v, want the two texts only", msgs)
	}
	if got := texts(t, b, n.conv); len(got) != 2 || got[0] != "one" || got[1] != "two" {
		t.Fatalf("bob's history shows %q", got)
	}
	hist, _ := b.eng.messages(n.conv)
	if len(hist) != 2 {
		t.Fatalf("bob's history holds %d messages, want the 2 texts", len(hist))
	}
}
