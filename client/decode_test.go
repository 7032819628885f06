package client

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/wire"
)

func mustCodec(t testing.TB) codec {
	cd, err := newCodec()
	if err != nil {
		t.Fatal(err)
	}
	return cd
}

func TestPayloadRoundTripAndRefusals(t *testing.T) {
	cd := mustCodec(t)
	sender := bytes.Repeat([]byte{7}, 32)
	good := []*payload{
		{Type: PayloadText, Seq: 1, SentMS: 5, Text: "hello"},
		{Type: PayloadText, Seq: 1, SentMS: 5, Text: "hello", Clock: 6},
		{Type: PayloadText, Seq: 1, SentMS: 5, Text: "hello", Clock: MaxClock},
		{Type: PayloadAttachment, Seq: 2, SentMS: 5, Clock: 7, Attachment: &attachmentBody{Name: "a.txt", MIME: "text/plain", Data: []byte("x")}},
		{Type: PayloadResendRequest, SentMS: 5, Resend: &resendBody{Sender: sender, Seqs: []uint64{3, 4}}},
		{Type: PayloadResendRequest, SentMS: 5, Resend: &resendBody{Sender: sender, Epoch: 2}},
		{Type: PayloadHistory, SentMS: 5, History: &historyBody{Transfer: make([]byte, 16), Index: 0, Key: []byte("k"), Data: []byte("d")}},
	}
	for _, p := range good {
		b, err := cd.encodePayload(p)
		if err != nil {
			t.Fatalf("encode %s: %v", p.Type, err)
		}
		back, err := cd.decodePayload(b)
		if err != nil {
			t.Fatalf("decode %s: %v", p.Type, err)
		}
		again, _ := cd.encodePayload(back)
		if !bytes.Equal(again, b) {
			t.Fatalf("%s does not round-trip", p.Type)
		}
	}
	bad := map[string]*payload{
		"text without number":                    {Type: PayloadText, SentMS: 5, Text: "x"},
		"empty text":                             {Type: PayloadText, Seq: 1, SentMS: 5},
		"numbered resend request":                {Type: PayloadResendRequest, Seq: 1, Resend: &resendBody{Sender: sender, Seqs: []uint64{1}}},
		"resend numbers descending":              {Type: PayloadResendRequest, Resend: &resendBody{Sender: sender, Seqs: []uint64{4, 3}}},
		"resend seqs and epoch":                  {Type: PayloadResendRequest, Resend: &resendBody{Sender: sender, Seqs: []uint64{1}, Epoch: 1}},
		"type 0":                                 {Type: 0, Seq: 1, Text: "x"},
		"unknown unnumbered type with a counter": {Type: 99, Clock: 1},
		"text with attachment":                   {Type: PayloadText, Seq: 1, Text: "x", Attachment: &attachmentBody{}},
		"first after seq":                        {Type: PayloadText, Seq: 1, First: 2, Text: "x"},
		"counter over MaxClock":                  {Type: PayloadText, Seq: 1, Text: "x", Clock: MaxClock + 1},
		"counter on a resend":                    {Type: PayloadResendRequest, Clock: 1, Resend: &resendBody{Sender: sender, Epoch: 1}},
		"counter on history":                     {Type: PayloadHistory, Clock: 1, History: &historyBody{Transfer: make([]byte, 16), Key: []byte("k")}},
	}
	for name, p := range bad {
		if _, err := cd.encodePayload(p); err == nil {
			t.Errorf("%s: encoded", name)
		}
	}
	// Trailing bytes, unknown must-understand keys and a wrong version are refused by the decoder; an unknown
	// elective key is ignored (compat_test.go).
	b, _ := cd.encodePayload(&payload{Type: PayloadText, Seq: 1, Text: "x"})
	if _, err := cd.decodePayload(append(b, 0)); err == nil {
		t.Error("trailing byte accepted")
	}
	m := map[int]any{1: 1, 2: 1, 3: 1, 4: 0, 5: "x", -99: 1}
	unk, _ := cd.enc.Marshal(m)
	if _, err := cd.decodePayload(unk); err == nil {
		t.Error("unknown must-understand key accepted")
	}
	m = map[int]any{1: 2, 2: 1, 3: 1, 4: 0, 5: "x"}
	v2, _ := cd.enc.Marshal(m)
	if _, err := cd.decodePayload(v2); err == nil {
		t.Error("version 2 accepted")
	}
}

// oldClientPayload is a text payload as a client that predates counters encodes it (docs/PROTOCOL.md §9.3):
// {1: 1, 2: 1, 3: 1, 4: 1700000000000, 5: "hello"}, no key 13.
const oldClientPayload = "a5010102010301041b0000018bcfe56800056568656c6c6f"

// A payload without a counter decodes, with counter 0, and lists by its sent time; one with a counter keeps it.
func TestPayloadFromOlderClientDecodesWithoutCounter(t *testing.T) {
	cd := mustCodec(t)
	b, err := hex.DecodeString(oldClientPayload)
	if err != nil {
		t.Fatal(err)
	}
	p, err := cd.decodePayload(b)
	if err != nil {
		t.Fatalf("an older client's payload does not decode: %v", err)
	}
	if p.Clock != 0 || p.SentMS != 1_700_000_000_000 || p.Text != "hello" || p.Seq != 1 {
		t.Fatalf("decoded %+v", p)
	}
	if got := orderOf(p.Clock, p.SentMS); got != 1_700_000_000_000 {
		t.Fatalf("an older client's payload orders as %d, want its sent time", got)
	}
	if again, err := cd.encodePayload(p); err != nil || !bytes.Equal(again, b) {
		t.Fatalf("re-encoded as %x (%v), want the same bytes: no counter added", again, err)
	}
	p.Clock = 1_700_000_000_001
	withClock, err := cd.encodePayload(p)
	if err != nil {
		t.Fatal(err)
	}
	back, err := cd.decodePayload(withClock)
	if err != nil || back.Clock != p.Clock {
		t.Fatalf("counter %d decoded as %+v, %v", p.Clock, back, err)
	}
	m := map[int]any{1: 1, 2: 1, 3: 1, 4: 0, 5: "x", 13: uint64(MaxClock) + 1}
	over, _ := cd.enc.Marshal(m)
	if _, err := cd.decodePayload(over); err == nil {
		t.Error("counter over MaxClock accepted")
	}
	m = map[int]any{1: 1, 2: 4, 4: 0, 8: map[int]any{1: make([]byte, 32), 3: 1}, 13: 5}
	resend, _ := cd.enc.Marshal(m)
	if _, err := cd.decodePayload(resend); err == nil {
		t.Error("counter on a resend request accepted")
	}
	delete(m, 13)
	resend, _ = cd.enc.Marshal(m)
	if _, err := cd.decodePayload(resend); err != nil {
		t.Errorf("the same resend request without a counter refused: %v", err)
	}
}

func TestGroupStateRefusesForgedAndOutOfOrderRecords(t *testing.T) {
	cd := mustCodec(t)
	now := time.Now()
	admin, _ := e2ee.NewDeviceKeys(now)
	achain, _ := e2ee.NewAccount(admin, now)
	other, _ := e2ee.NewDeviceKeys(now)
	ochain, _ := e2ee.NewAccount(other, now)
	ast, _ := e2ee.Replay(achain)
	ost, _ := e2ee.Replay(ochain)
	conv, _ := e2ee.NewConversationID()
	members := []e2ee.AccountID{ast.Account, ost.Account}
	if cmpAccount(members[0], members[1]) > 0 {
		members[0], members[1] = members[1], members[0]
	}
	g1 := &GroupState{Conversation: conv, Version: 1, Name: "g", Members: members, Admins: []e2ee.AccountID{ast.Account}, Signer: ast.Account, Time: now}
	rec1, err := cd.signGroupState(admin, g1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cd.verifyGroupState(rec1, nil, nil, ast); err != nil {
		t.Fatalf("valid version 1 refused: %v", err)
	}
	// A non-admin member signs version 2 removing the admin.
	g2 := *g1
	g2.Version, g2.Prev, g2.Signer = 2, mustGroupHash(t, cd, rec1), ost.Account
	g2.Admins = []e2ee.AccountID{ost.Account}
	rec2, err := cd.signGroupState(other, &g2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cd.verifyGroupState(rec2, g1, rec1, ost); err == nil {
		t.Fatal("a non-admin's change was accepted")
	}
	// A record claiming the admin as signer but signed by another device.
	g3 := *g1
	g3.Version, g3.Prev, g3.Signer = 2, mustGroupHash(t, cd, rec1), ast.Account
	rec3, _ := cd.signGroupState(other, &g3)
	if _, err := cd.verifyGroupState(rec3, g1, rec1, ast); err == nil {
		t.Fatal("a record signed by a device of another account was accepted")
	}
	// A version that skips one.
	g4 := *g1
	g4.Version, g4.Prev = 3, mustGroupHash(t, cd, rec1)
	rec4, _ := cd.signGroupState(admin, &g4)
	if _, err := cd.verifyGroupState(rec4, g1, rec1, ast); err == nil {
		t.Fatal("version 3 accepted after version 1")
	}
}

// What the signature does not cover cannot split a group: a member that passes version 1 on with an elective
// key added to the record, or with the record's map written in another (valid) CBOR form, leaves the receiver
// holding different bytes of the same version, and the admin's version 2 follows it all the same. Prev names
// the signed body, not the record.
func TestGroupStateSuccessorFollowsTamperedFramingOfItsPredecessor(t *testing.T) {
	cd := mustCodec(t)
	now := time.Now()
	admin, _ := e2ee.NewDeviceKeys(now)
	achain, _ := e2ee.NewAccount(admin, now)
	ast, _ := e2ee.Replay(achain)
	conv, _ := e2ee.NewConversationID()
	g1 := &GroupState{Conversation: conv, Version: 1, Name: "g", Members: []e2ee.AccountID{ast.Account},
		Admins: []e2ee.AccountID{ast.Account}, Signer: ast.Account, Time: now}
	rec1, err := cd.signGroupState(admin, g1)
	if err != nil {
		t.Fatal(err)
	}
	var sg signedGroup
	if err := cd.dec.Unmarshal(rec1, &sg); err != nil {
		t.Fatal(err)
	}
	withKey, err := cbor.Marshal(map[int]any{1: sg.Body, 2: sg.Request, 40: "added by a member"})
	if err != nil {
		t.Fatal(err)
	}
	// The same map with its first key written in two bytes (0x18 0x01) instead of one: valid, not canonical.
	longKey := append([]byte{rec1[0], 0x18}, rec1[1:]...)
	g2 := *g1
	g2.Version, g2.Prev, g2.Name = 2, mustGroupHash(t, cd, rec1), "renamed"
	rec2, err := cd.signGroupState(admin, &g2)
	if err != nil {
		t.Fatal(err)
	}
	for name, held := range map[string][]byte{"an elective key added": withKey, "a longer key encoding": longKey} {
		cur, err := cd.verifyGroupState(held, nil, nil, ast)
		if err != nil || bytes.Equal(held, rec1) {
			t.Fatalf("%s: the passed-on version 1 (%x) is refused or unchanged: %v", name, held, err)
		}
		if _, err := cd.verifyGroupState(rec2, cur, held, ast); err != nil {
			t.Fatalf("%s: version 2 refused after version 1 as passed on: %v", name, err)
		}
	}
}

func mustGroupHash(t *testing.T, cd codec, rec []byte) [32]byte {
	t.Helper()
	h, err := cd.groupHash(rec)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func FuzzDecodePayload(f *testing.F) {
	cd := mustCodec(f)
	for _, p := range []*payload{
		{Type: PayloadText, Seq: 1, SentMS: 5, Text: "hello"},
		{Type: PayloadText, Seq: 2, SentMS: 5, Text: "hello", Clock: 1_700_000_000_000},
		{Type: PayloadResendRequest, SentMS: 5, Resend: &resendBody{Sender: make([]byte, 32), Seqs: []uint64{3, 4}}},
	} {
		b, _ := cd.encodePayload(p)
		f.Add(b)
	}
	old, _ := hex.DecodeString(oldClientPayload)
	f.Add(old)
	// What a newer client may send (compat_test.go): elective keys at the top level and in bodies, a
	// must-understand key, types this client does not know, numbered and not.
	for _, m := range []map[int]any{
		{1: 1, 2: 1, 3: 1, 4: 5, 5: "hello", 14: map[int]any{1: []any{1, "x"}}, 64: true},
		{1: 1, 2: 1, 3: 1, 4: 5, 5: "hello", -1: 1},
		{1: 1, 2: 2, 3: 1, 4: 5, 6: map[int]any{1: "a", 2: "b", 3: []byte("c"), 4: "thumb"}},
		{1: 1, 2: 2, 3: 1, 4: 5, 6: map[int]any{1: "a", 2: "b", 3: []byte("c"), -4: "must"}},
		{1: 1, 2: 4, 4: 5, 8: map[int]any{1: make([]byte, 32), 3: 1, 4: nil}},
		{1: 1, 2: 42, 3: 7, 4: 5, 11: 1, 13: 9, 30: []any{"yes", "no"}},
		{1: 1, 2: 43, 4: 5, 20: map[int]any{1: true}},
	} {
		b, _ := cd.enc.Marshal(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := cd.decodePayload(b)
		if err != nil {
			if !errors.Is(err, ErrBadPayload) {
				t.Fatalf("refused with %v, not ErrBadPayload", err)
			}
			return
		}
		if _, err := cd.encodePayload(p); err != nil {
			t.Fatalf("decoded payload does not encode: %v", err)
		}
		if p.Clock > MaxClock || (p.Clock != 0 && !p.numbered()) {
			t.Fatalf("decoded a %s with counter %d", p.Type, p.Clock)
		}
		if p.numbered() != (p.Seq != 0) || p.Type == 0 {
			t.Fatalf("decoded a %s with sequence number %d", p.Type, p.Seq)
		}
	})
}

func FuzzDecodeEnvelope(f *testing.F) {
	cd := mustCodec(f)
	b, _ := cd.encodeEnvelope(&envelope{Message: []byte("m"), KeyDist: []byte("k")})
	f.Add(b)
	b, _ = cd.encodeEnvelope(&envelope{Keys: [][]byte{[]byte("k")}, WantKeys: true})
	f.Add(b)
	fs, _ := cd.fragmentEnvelope(wire.MessageID{1}, bytes.Repeat([]byte("envelope"), 100), 400)
	for _, b := range fs {
		f.Add(b)
	}
	// What a newer client may send (compat_envelope_test.go) is in testdata: elective keys in the envelope
	// and in a fragment, an envelope of elective keys only, must-understand keys.
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := cd.decodeEnvelope(b)
		if err != nil {
			if !errors.Is(err, ErrBadPayload) {
				t.Fatalf("refused with %v, not ErrBadPayload", err)
			}
			return
		}
		enc, err := cd.encodeEnvelope(e)
		if err != nil {
			t.Fatalf("decoded envelope does not encode: %v", err)
		}
		// Without its elective keys, an envelope that is not empty is one of this version.
		if _, err := cd.decodeEnvelope(enc); err != nil && !e.empty() {
			t.Fatalf("decoded envelope, encoded again, does not decode: %v", err)
		}
	})
}

func FuzzDecodeGroupState(f *testing.F) {
	cd := mustCodec(f)
	now := time.Now()
	dk, _ := e2ee.NewDeviceKeys(now)
	c, _ := e2ee.NewAccount(dk, now)
	a := c.AccountID()
	conv, _ := e2ee.NewConversationID()
	rec, _ := cd.signGroupState(dk, &GroupState{Conversation: conv, Version: 1, Name: "g", Members: []e2ee.AccountID{a}, Admins: []e2ee.AccountID{a}, Signer: a, Time: now})
	f.Add(rec)
	// Records of a newer admin's client (compat_envelope_test.go) are in testdata: elective keys in the body
	// and in the record, must-understand keys.
	f.Fuzz(func(t *testing.T, b []byte) {
		g, _, _, err := cd.decodeGroupState(b)
		if err != nil {
			if !errors.Is(err, ErrBadGroupState) {
				t.Fatalf("refused with %v, not ErrBadGroupState", err)
			}
			return
		}
		if err := g.check(); err != nil {
			t.Fatalf("decoded group state fails its own check: %v", err)
		}
	})
}

// BenchmarkDecodePayload measures decodePayload on a typical text payload and a 4 KiB attachment, beside its
// baseline in the same run: the payload decoded as before elective keys, by the strict struct decoder (unknown
// keys refused) and validate. A third payload, the text with two elective keys (one a small map), which the
// baseline refuses, shows the cost of skipping and checking them.
func BenchmarkDecodePayload(b *testing.B) {
	cd := mustCodec(b)
	peer := bytes.Repeat([]byte{9}, 32)
	text := &payload{Type: PayloadText, Seq: 41, First: 1, SentMS: 1_700_000_000_000, Clock: 1_700_000_000_001, Peer: peer,
		Text: "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"}
	attachment := &payload{Type: PayloadAttachment, Seq: 42, First: 1, SentMS: 1_700_000_000_000, Clock: 1_700_000_000_002, Peer: peer,
		Attachment: &attachmentBody{Name: "a.bin", MIME: "application/octet-stream", Data: make([]byte, 4096)}}
	for _, tc := range []struct {
		name     string
		enc      []byte
		baseline bool
	}{
		{"text", mustEncodePayload(b, cd, text), true},
		{"attachment", mustEncodePayload(b, cd, attachment), true},
		{"text+elective", func() []byte {
			m := map[int]any{1: 1, 2: 1, 3: 41, 4: text.SentMS, 5: text.Text, 11: 1, 12: peer, 13: text.Clock,
				14: map[int]any{1: "reply-to", 2: []byte("0123456789abcdef")}, 15: true}
			v, err := cd.enc.Marshal(m)
			if err != nil {
				b.Fatal(err)
			}
			return v
		}(), false},
	} {
		if tc.baseline {
			b.Run(tc.name+"/baseline=strict-struct", func(b *testing.B) {
				for b.Loop() {
					var p payload
					if err := cd.dec.Unmarshal(tc.enc, &p); err != nil {
						b.Fatal(err)
					}
					if err := p.validate(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		b.Run(tc.name+"/decodePayload", func(b *testing.B) {
			for b.Loop() {
				if _, err := cd.decodePayload(tc.enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func mustEncodePayload(b testing.TB, cd codec, p *payload) []byte {
	b.Helper()
	v, err := cd.encodePayload(p)
	if err != nil {
		b.Fatal(err)
	}
	return v
}
