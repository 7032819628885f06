package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/wire"
)

// inbox takes what the network queued for d.
func inbox(d *device) []memEnv {
	d.net.mu.Lock()
	defer d.net.mu.Unlock()
	q := d.net.inbox[d.keys.ID()]
	delete(d.net.inbox, d.keys.ID())
	return q
}

func receiveAll(t *testing.T, d *device, q []memEnv) {
	t.Helper()
	for _, e := range q {
		if err := d.eng.receive(context.Background(), e.id, e.from, e.ct); err != nil {
			t.Fatalf("receive: %v", err)
		}
	}
}

func attachments(t *testing.T, d *device, conv e2ee.ConversationID) [][]byte {
	t.Helper()
	ms, err := d.eng.messages(conv)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, m := range ms {
		if m.Attachment != nil {
			out = append(out, m.Attachment.Data)
		}
	}
	return out
}

func TestLargestAttachmentTravelsAsFragmentsInAnyOrder(t *testing.T) {
	net := newMemNet() // refuses envelopes over 64 KiB, as the grid does by default
	a, _ := newAccount(t, net, "alice", e2ee.RenewalPolicy{})
	b, _ := newAccount(t, net, "bob", e2ee.RenewalPolicy{})
	conv := startDirect(t, a, b.eng.self)
	data := make([]byte, MaxAttachmentBytes)
	rand.Read(data)
	if _, err := a.eng.send(context.Background(), conv, &payload{Type: PayloadAttachment,
		Attachment: &attachmentBody{Name: "big.bin", MIME: "application/octet-stream", Data: data}}, sendOpts{}); err != nil {
		t.Fatal(err)
	}
	q := inbox(b)
	if len(q) < 5 {
		t.Fatalf("a %d-byte attachment went as %d envelopes, want at least 5 fragments", len(data), len(q))
	}
	for _, e := range q {
		if len(e.ct) > defaultGridLimits().ciphertext {
			t.Fatalf("an envelope of %d bytes", len(e.ct))
		}
	}
	// The grid reorders the fragments and repeats two of them.
	slices.Reverse(q)
	q = append(q, q[0], q[3])
	receiveAll(t, b, q)
	got := attachments(t, b, conv)
	if len(got) != 1 || !bytes.Equal(got[0], data) {
		t.Fatalf("bob has %d attachments, want the one sent, byte for byte", len(got))
	}
	if n := b.st.Len(bucketFragSets) + b.st.Len(bucketFrags); n != 0 {
		t.Fatalf("%d fragment entries left after reassembly", n)
	}
	// A fragment delivered again after its set was processed is dropped.
	receiveAll(t, b, q[:1])
	if n := b.st.Len(bucketFragSets); n != 0 || len(attachments(t, b, conv)) != 1 {
		t.Fatalf("a repeated fragment left %d sets and %d attachments", n, len(attachments(t, b, conv)))
	}
}

// TestGroupOfSeventyDevicesGetsBoundedKeyDistributionChunks measures what each recipient of a session's first
// message receives: one chunk of the key distribution, not every device's entry.
func TestGroupOfSeventyDevicesGetsBoundedKeyDistributionChunks(t *testing.T) {
	net := newMemNet()
	var devs []*device
	var accts []e2ee.AccountID
	for i := range 10 {
		d1, c := newBenchAccount(t, net, fmt.Sprint("member", i))
		devs = append(devs, d1)
		for range 6 {
			devs = append(devs, linkDevice(t, net, c, d1))
		}
		accts = append(accts, c.AccountID())
	}
	sender, _ := newBenchAccount(t, net, "sender")
	members := append(slices.Clone(accts), sender.eng.self)
	slices.SortFunc(members, cmpAccount)
	conv, _ := e2ee.NewConversationID()
	g := &GroupState{Conversation: conv, Version: 1, Name: "seventy", Members: members, Admins: []e2ee.AccountID{sender.eng.self},
		Signer: sender.eng.self, Time: time.Now().UTC()}
	rec, err := sender.eng.cd.signGroupState(sender.keys, g)
	if err != nil {
		t.Fatal(err)
	}
	if err := sender.eng.ensureConv(conv, &convRecord{Kind: Group, Group: rec}); err != nil {
		t.Fatal(err)
	}
	if _, err := sender.eng.send(context.Background(), conv, &payload{Type: PayloadText, Text: "hello seventy"}, sendOpts{}); err != nil {
		t.Fatal(err)
	}
	var ds *DeliveryEvent
	for _, ev := range sender.eng.ev.take() {
		if d, ok := ev.(*DeliveryEvent); ok {
			ds = d
		}
	}
	if ds == nil || len(ds.Statuses) != 70 {
		t.Fatalf("delivery event %+v, want 70 statuses", ds)
	}
	maxBytes := 0
	for _, d := range devs {
		maxBytes = max(maxBytes, net.devSent[d.keys.ID()])
	}
	single := e2ee.KeyDistOverhead + 70*e2ee.KeyDistEntrySize
	t.Logf("first message: at most %d bytes per recipient, in %d sends; one key distribution for all 70 would be %d bytes",
		maxBytes, net.sends, single)
	if maxBytes > defaultGridLimits().ciphertext {
		t.Fatalf("a recipient got %d bytes for the first message, over one envelope", maxBytes)
	}
	sr, _ := sender.eng.senderRec(conv)
	per := kdChunkEntries(defaultGridLimits().ciphertext, len(sender.keys.MessagingKey().Encode()))
	if len(sr.KeyDists) != (70+per-1)/per {
		t.Fatalf("%d chunks of at most %d entries for 70 devices", len(sr.KeyDists), per)
	}
	for _, d := range devs {
		receiveAll(t, d, inbox(d))
		if got := texts(t, d, conv); !slices.Equal(got, []string{"hello seventy"}) {
			t.Fatalf("device %s shows %q", d.keys.ID(), got)
		}
	}
	// A resend to one device carries only that device's chunk.
	last := devs[len(devs)-1]
	net.devSent = map[e2ee.DeviceID]int{}
	sid := sender.keys.ID()
	sender.eng.answerResend(context.Background(), conv, last.keys.ID(), &resendBody{Sender: sid[:], Seqs: []uint64{1}})
	q := inbox(last)
	if len(q) != 1 || net.devSent[last.keys.ID()] > maxBytes+256 {
		t.Fatalf("the resend went as %d envelopes of %d bytes", len(q), net.devSent[last.keys.ID()])
	}
	env, err := last.eng.cd.decodeEnvelope(q[0].ct)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := e2ee.DecodeKeyDistribution(env.KeyDist)
	if err != nil || !slices.Contains(kd.Recipients(), last.keys.ID()) || len(kd.Entries) > per {
		t.Fatalf("the resend's key distribution (%v) is not the device's chunk", err)
	}
}

// oldSenderRecord is senderRecord as version 0 stored it: the session's key distribution in one piece.
type oldSenderRecord struct {
	Epoch   uint64   `cbor:"1,keyasint"`
	Started int64    `cbor:"2,keyasint"`
	Count   uint64   `cbor:"3,keyasint"`
	Members [][]byte `cbor:"4,keyasint"`
	Sender  []byte   `cbor:"5,keyasint"`
	KeyDist []byte   `cbor:"6,keyasint"`
	First   uint64   `cbor:"7,keyasint"`
}

func TestSenderRecordOfTheOldShapeStillLoadsAndSends(t *testing.T) {
	net := newMemNet()
	a, _ := newAccount(t, net, "alice", e2ee.RenewalPolicy{})
	b, _ := newAccount(t, net, "bob", e2ee.RenewalPolicy{})
	conv := startDirect(t, a, b.eng.self)
	// What a client before chunked key distributions stored: a session distributed in one piece, not used yet.
	s, err := e2ee.NewSession(conv, 1)
	if err != nil {
		t.Fatal(err)
	}
	rk, err := net.recipientKey(context.Background(), b.keys.Public())
	if err != nil {
		t.Fatal(err)
	}
	kd, err := e2ee.Distribute(a.keys, s, []e2ee.RecipientKey{rk})
	if err != nil {
		t.Fatal(err)
	}
	snd, err := s.Sender(a.keys)
	if err != nil {
		t.Fatal(err)
	}
	aid, bid := a.keys.ID(), b.keys.ID()
	old := oldSenderRecord{Epoch: 1, Started: time.Now().UnixMilli(), Members: [][]byte{aid[:], bid[:]}, Sender: snd.Encode(), KeyDist: kd.Encode()}
	v, err := a.eng.cd.enc.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.st.Put(bucketSenders, conv.String(), v); err != nil {
		t.Fatal(err)
	}
	sr, err := a.eng.senderRec(conv)
	if err != nil || sr.V != senderRecordVersion || len(sr.KeyDists) != 1 || !bytes.Equal(sr.KeyDists[0], kd.Encode()) {
		t.Fatalf("the old record loads as %+v, %v; want its key distribution as the one chunk", sr, err)
	}
	sendText(t, a, conv, "from an old session")
	deliver(t, a, b)
	if got := texts(t, b, conv); !slices.Equal(got, []string{"from an old session"}) {
		t.Fatalf("bob shows %q", got)
	}
	if sr, _ := a.eng.senderRec(conv); sr.Epoch != 1 || sr.Count != 1 {
		t.Fatalf("the old session was not the one used: epoch %d, count %d", sr.Epoch, sr.Count)
	}
	// Records of no known version, or of a version without its key distribution, are refused.
	for name, r := range map[string]any{
		"version 0 without key distribution": oldSenderRecord{Epoch: 1, Sender: snd.Encode()},
		"version 1 with the old field":       senderRecord{Epoch: 1, V: 1, KeyDist: kd.Encode(), KeyDists: [][]byte{kd.Encode()}},
		"version 7":                          senderRecord{Epoch: 1, V: 7, KeyDists: [][]byte{kd.Encode()}},
	} {
		v, _ := a.eng.cd.enc.Marshal(r)
		if _, err := a.eng.cd.decodeSenderRecord(v); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
}

// fragmentsOf returns the fragment envelopes of a random envelope-sized blob.
func fragmentsOf(t *testing.T, cd codec, size, limit int) (wire.MessageID, [][]byte) {
	t.Helper()
	env := make([]byte, size)
	rand.Read(env)
	set := newMessageID()
	fs, err := cd.fragmentEnvelope(set, env, limit)
	if err != nil {
		t.Fatal(err)
	}
	return set, fs
}

func TestIncompleteFragmentSetsAreBoundedAndExpire(t *testing.T) {
	net := newMemNet()
	b, _ := newAccount(t, net, "bob", e2ee.RenewalPolicy{})
	now := time.Now()
	b.eng.cfg.now = func() time.Time { return now }
	feed := func(from e2ee.DeviceID, env []byte) {
		t.Helper()
		if err := b.eng.receive(context.Background(), newMessageID(), from, env); err != nil {
			t.Fatal(err)
		}
	}
	sets := func(from e2ee.DeviceID) int {
		n := 0
		for _, k := range b.st.Keys(bucketFragSets) {
			if len(k) > 64 && k[:64] == from.String() {
				n++
			}
		}
		return n
	}
	// One sender starts more sets than it may keep: its oldest go.
	var alice e2ee.DeviceID
	rand.Read(alice[:])
	var firsts []wire.MessageID
	for range maxFragmentSetsPerSender + 2 {
		set, fs := fragmentsOf(t, b.eng.cd, 3000, 1024)
		firsts = append(firsts, set)
		feed(alice, fs[0])
		now = now.Add(time.Second)
	}
	if n := sets(alice); n != maxFragmentSetsPerSender {
		t.Fatalf("one sender holds %d incomplete sets, want %d", n, maxFragmentSetsPerSender)
	}
	if _, ok := b.st.Get(bucketFragSets, fragSetKey(alice, firsts[0][:])); ok {
		t.Fatal("the sender's oldest set was kept")
	}
	// Many senders: all of them together keep at most maxFragmentSets.
	for range maxFragmentSets + 3 {
		var d e2ee.DeviceID
		rand.Read(d[:])
		_, fs := fragmentsOf(t, b.eng.cd, 3000, 1024)
		feed(d, fs[0])
		now = now.Add(time.Second)
	}
	if n := b.st.Len(bucketFragSets); n != maxFragmentSets {
		t.Fatalf("%d incomplete sets kept, want %d", n, maxFragmentSets)
	}
	// Past fragmentKeep, prune drops them with their data.
	now = now.Add(fragmentKeep + time.Minute)
	b.eng.prune()
	if n := b.st.Len(bucketFragSets) + b.st.Len(bucketFrags); n != 0 {
		t.Fatalf("%d fragment entries left after expiry", n)
	}
}

func TestBadFragmentsAreDropped(t *testing.T) {
	net := newMemNet()
	b, _ := newAccount(t, net, "bob", e2ee.RenewalPolicy{})
	cd := b.eng.cd
	var from e2ee.DeviceID
	rand.Read(from[:])
	feed := func(env []byte) {
		t.Helper()
		if err := b.eng.receive(context.Background(), newMessageID(), from, env); err != nil {
			t.Fatal(err)
		}
	}
	// A fragment that disagrees with the set it names is not kept.
	set, fs := fragmentsOf(t, cd, 3000, 1024)
	feed(fs[0])
	other, _ := cd.decodeEnvelope(fs[1])
	other.Frag.Size++
	b1, _ := cd.encodeEnvelope(other)
	feed(b1)
	if v, _ := b.st.Get(bucketFragSets, fragSetKey(from, set[:])); v == nil {
		t.Fatal("the set vanished")
	}
	if fsr, _ := b.eng.fragSet(fragSetKey(from, set[:])); len(fsr.Have) != 1 {
		t.Fatalf("the set holds %d fragments after a disagreeing one, want 1", len(fsr.Have))
	}
	// A complete set whose bytes do not match its hash is dropped whole.
	set, fs = fragmentsOf(t, cd, 3000, 1024)
	for i, f := range fs {
		e, _ := cd.decodeEnvelope(f)
		if i == 1 {
			e.Frag.Data = bytes.Clone(e.Frag.Data)
			e.Frag.Data[0] ^= 1
		}
		f, _ = cd.encodeEnvelope(e)
		feed(f)
	}
	if _, ok := b.st.Get(bucketFragSets, fragSetKey(from, set[:])); ok {
		t.Fatal("a set whose bytes do not match its hash was kept")
	}
	// Fragments of a fragment are not reassembled twice.
	inner, _ := cd.encodeEnvelope(&envelope{Frag: &fragment{Set: make([]byte, 16), Count: 2, Size: 1, Hash: make([]byte, 32), Data: []byte{1}}})
	sum := sha256.Sum256(inner)
	set = newMessageID()
	for i := range 2 {
		lo, hi := i*len(inner)/2, (i+1)*len(inner)/2
		f, _ := cd.encodeEnvelope(&envelope{Frag: &fragment{Set: set[:], Index: uint32(i), Count: 2, Size: uint32(len(inner)), Hash: sum[:], Data: inner[lo:hi]}})
		feed(f)
	}
	if _, seen := b.st.Get(bucketSeen, fmt.Sprintf("%x", set[:])); !seen {
		t.Fatal("a nested fragment set was not dropped for good")
	}
	if n := b.st.Len(bucketFragSets) + b.st.Len(bucketFrags); n != 2 { // the first, incomplete set
		t.Fatalf("%d fragment entries left, want the 2 of the incomplete set", n)
	}
	// Refused by the decoder: fragments with other envelope fields, or out-of-range fields.
	good := fragment{Set: make([]byte, 16), Index: 1, Count: 2, Size: 10, Hash: make([]byte, 32), Data: []byte{1}}
	for name, e := range map[string]envelope{
		"with a message":   {Frag: &good, Message: []byte("m")},
		"index past count": {Frag: &fragment{Set: good.Set, Index: 2, Count: 2, Size: 10, Hash: good.Hash, Data: good.Data}},
		"one fragment":     {Frag: &fragment{Set: good.Set, Index: 0, Count: 1, Size: 10, Hash: good.Hash, Data: good.Data}},
		"too many":         {Frag: &fragment{Set: good.Set, Index: 0, Count: maxFragments + 1, Size: 10, Hash: good.Hash, Data: good.Data}},
		"over the cap":     {Frag: &fragment{Set: good.Set, Index: 0, Count: 2, Size: MaxEnvelopeBytes + 1, Hash: good.Hash, Data: good.Data}},
		"data over size":   {Frag: &fragment{Set: good.Set, Index: 0, Count: 2, Size: 1, Hash: good.Hash, Data: []byte{1, 2}}},
		"short set":        {Frag: &fragment{Set: good.Set[:15], Index: 0, Count: 2, Size: 10, Hash: good.Hash, Data: good.Data}},
		"empty data":       {Frag: &fragment{Set: good.Set, Index: 0, Count: 2, Size: 10, Hash: good.Hash}},
	} {
		e.V = EnvelopeVersion
		v, _ := cd.enc.Marshal(&e)
		if _, err := cd.decodeEnvelope(v); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

func TestFragmentingRefusesWhatCannotFit(t *testing.T) {
	cd := mustCodec(t)
	env := make([]byte, 10_000)
	if _, err := cd.fragmentEnvelope(newMessageID(), env, fragmentOverhead); err == nil {
		t.Fatal("a limit with no room for data was accepted")
	}
	if _, err := cd.fragmentEnvelope(newMessageID(), env, 10_000/maxFragments); err == nil {
		t.Fatal("more than maxFragments fragments were made")
	}
	fs, err := cd.fragmentEnvelope(newMessageID(), env, 4096)
	if err != nil {
		t.Fatal(err)
	}
	var back []byte
	for _, f := range fs {
		if len(f) > 4096 {
			t.Fatalf("a fragment of %d bytes over the 4096-byte limit", len(f))
		}
		e, err := cd.decodeEnvelope(f)
		if err != nil {
			t.Fatal(err)
		}
		back = append(back, e.Frag.Data...)
	}
	if !bytes.Equal(back, env) {
		t.Fatal("the fragments do not make the envelope")
	}
}

func TestDeliveryStatusesMergeToTheWorst(t *testing.T) {
	st := func(s string, r int) DeliveryStatus { return DeliveryStatus{Status: s, Receipts: r} }
	for _, c := range []struct{ a, b, want DeliveryStatus }{
		{st(wire.StatusDelivered, 0), st(wire.StatusStored, 2), st(wire.StatusStored, 2)},
		{st(wire.StatusStored, 3), st(wire.StatusStored, 2), st(wire.StatusStored, 2)},
		{st(wire.StatusStored, 2), st(wire.StatusDelivered, 0), st(wire.StatusStored, 2)},
		{st(wire.StatusOffline, 0), st(wire.StatusStored, 2), st(wire.StatusOffline, 0)},
		{st(wire.StatusStored, 2), st(wire.StatusFailed, 0), st(wire.StatusFailed, 0)},
	} {
		if got := worseStatus(c.a, c.b); got != c.want {
			t.Errorf("worseStatus(%v, %v) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

func FuzzFragmentEnvelope(f *testing.F) {
	cd := mustCodec(f)
	f.Add(bytes.Repeat([]byte{7}, 700), uint16(200))
	f.Add([]byte("a small envelope, just over"), uint16(140))
	f.Fuzz(func(t *testing.T, env []byte, limit uint16) {
		fs, err := cd.fragmentEnvelope(newMessageID(), env, int(limit))
		if err != nil {
			return
		}
		var back []byte
		for i, b := range fs {
			if len(b) > int(limit) {
				t.Fatalf("fragment of %d bytes over %d", len(b), limit)
			}
			e, err := cd.decodeEnvelope(b)
			if err != nil || e.Frag == nil || e.Frag.Index != uint32(i) {
				t.Fatalf("fragment %d does not decode: %v", i, err)
			}
			back = append(back, e.Frag.Data...)
		}
		if !bytes.Equal(back, env) {
			t.Fatal("the fragments do not make the envelope")
		}
	})
}

// FuzzFragmentReassembly feeds arbitrary envelopes, as fragments of one sender, to a real engine: nothing
// fails, and the kept state stays within its bounds.
func FuzzFragmentReassembly(f *testing.F) {
	net := newMemNet()
	b, _ := newBenchAccount(f, net, "bob")
	cd := b.eng.cd
	var from e2ee.DeviceID
	from[0] = 1
	inner, _ := cd.encodeEnvelope(&envelope{Message: bytes.Repeat([]byte("m"), 700)})
	fs, _ := cd.fragmentEnvelope(wire.MessageID{9}, inner, 400)
	f.Add(fs[0], fs[1], fs[2])
	f.Add(fs[2], fs[0], fs[0])
	f.Fuzz(func(t *testing.T, x, y, z []byte) {
		for _, env := range [][]byte{x, y, z} {
			if err := b.eng.receive(context.Background(), newMessageID(), from, env); err != nil {
				t.Fatalf("receive: %v", err)
			}
		}
		if n := b.st.Len(bucketFragSets); n > maxFragmentSetsPerSender {
			t.Fatalf("%d incomplete sets kept for one sender", n)
		}
		for _, k := range b.st.Keys(bucketFragSets) {
			fs, _ := b.eng.fragSet(k)
			held := 0
			for _, i := range fs.Have {
				held += len(b.eng.fragData(k, i))
			}
			if len(fs.Have) >= int(fs.Count) || held > int(fs.Size) {
				t.Fatalf("set %s holds %d of %d fragments, %d of %d bytes", k, len(fs.Have), fs.Count, held, fs.Size)
			}
		}
	})
}
