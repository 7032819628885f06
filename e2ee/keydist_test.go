package e2ee

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
)

// chunkParty is a sender and n recipient devices.
func chunkParty(t *testing.T, n int) (*DeviceKeys, []*DeviceKeys, []RecipientKey) {
	t.Helper()
	sender := testDevice(t, "chunk-sender")
	var devs []*DeviceKeys
	var rks []RecipientKey
	for i := range n {
		d := testDevice(t, fmt.Sprintf("chunk-recipient-%d", i))
		devs = append(devs, d)
		rks = append(rks, recipientOf(t, d))
	}
	return sender, devs, rks
}

// detSession returns the session of conv/epoch with a key fixed by label, so two calls give the same key.
func detSession(t *testing.T, label string, conv ConversationID, epoch uint64) *Session {
	t.Helper()
	s, err := newSession(newDetRand(label), conv, epoch)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// chunkOf returns the chunk whose entries name dev.
func chunkOf(kds []*KeyDistribution, dev DeviceID) (int, *KeyDistribution) {
	for i, kd := range kds {
		if slices.Contains(kd.Recipients(), dev) {
			return i, kd
		}
	}
	return -1, nil
}

func TestKeyDistributionChunksOpenForTheirRecipientsWithTheSameChains(t *testing.T) {
	sender, devs, rks := chunkParty(t, 7)
	rks = append(rks, recipientOf(t, sender)) // the sender's own device is skipped, as by Distribute
	chunked := detSession(t, "chunked", convA, 3)
	kds, err := DistributeChunks(sender, chunked, rks, 3)
	if err != nil {
		t.Fatal(err)
	}
	// 7 recipients, at most 3 a chunk: 3 chunks of 2, 2 and 3, contiguous in device order, together every
	// recipient once.
	if len(kds) != 3 {
		t.Fatalf("%d chunks, want 3", len(kds))
	}
	var all []DeviceID
	for i, kd := range kds {
		if n := len(kd.Entries); n < 2 || n > 3 {
			t.Fatalf("chunk %d has %d entries, want 2 or 3", i, n)
		}
		if kd.Conversation != convA || kd.Epoch != 3 || kd.Sender != sender.ID() {
			t.Fatalf("chunk %d names conversation %s epoch %d sender %s", i, kd.Conversation, kd.Epoch, kd.Sender)
		}
		back, err := DecodeKeyDistribution(kd.Encode())
		if err != nil || !bytes.Equal(back.Encode(), kd.Encode()) {
			t.Fatalf("chunk %d round trip: %v", i, err)
		}
		if got, want := len(kd.Encode()), KeyDistOverhead+len(kd.Entries)*KeyDistEntrySize; got != want {
			t.Fatalf("chunk %d encodes to %d bytes, want %d", i, got, want)
		}
		all = append(all, kd.Recipients()...)
	}
	var want []DeviceID
	for _, d := range devs {
		want = append(want, d.ID())
	}
	slices.SortFunc(want, func(a, b DeviceID) int { return compareIDs(a[:], b[:]) })
	if !slices.Equal(all, want) {
		t.Fatal("the chunks do not list every recipient once, in device order")
	}
	if m := chunked.Members(); len(m) != 8 || !slices.Contains(m, sender.ID()) {
		t.Fatalf("the sender's session has %d members, want the sender and all 7 recipients", len(m))
	}

	// The same session key distributed in one piece: every receiver's chain for the sender is the same.
	whole := detSession(t, "chunked", convA, 3)
	kd, err := Distribute(sender, whole, rks)
	if err != nil {
		t.Fatal(err)
	}
	snd, err := chunked.Sender(sender)
	if err != nil {
		t.Fatal(err)
	}
	m, err := snd.Seal([]byte("one key, three chunks"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		_, chunk := chunkOf(kds, d.ID())
		s, err := Open(chunk, sender.Public(), d)
		if err != nil {
			t.Fatalf("%s opening its chunk: %v", d.ID(), err)
		}
		rc, err := s.Receiver(sender.Public(), ReceiverOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s1, err := Open(kd, sender.Public(), d)
		if err != nil {
			t.Fatal(err)
		}
		r1, err := s1.Receiver(sender.Public(), ReceiverOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(rc.Encode(), r1.Encode()) {
			t.Fatalf("%s: the chain from its chunk differs from the one of the single distribution", d.ID())
		}
		pt, err := rc.Open(m)
		if err != nil || string(pt) != "one key, three chunks" {
			t.Fatalf("%s: open %q: %v", d.ID(), pt, err)
		}
	}
	_, err = DistributeChunks(sender, chunked, rks, 3)
	requireIs(t, err, ErrSessionUsed)
}

func TestKeyDistributionChunkRefusedToDevicesOfOtherChunks(t *testing.T) {
	sender, devs, rks := chunkParty(t, 6)
	kds, err := DistributeChunks(sender, detSession(t, "other", convB, 1), rks, 2)
	if err != nil || len(kds) != 3 {
		t.Fatalf("%d chunks, %v; want 3", len(kds), err)
	}
	for _, d := range devs {
		mine, _ := chunkOf(kds, d.ID())
		for i, kd := range kds {
			if i == mine {
				continue
			}
			_, err := Open(kd, sender.Public(), d)
			requireIs(t, err, ErrNotRecipient)
		}
	}
	// An entry moved from one chunk into another breaks that chunk's signature.
	moved := *kds[0]
	moved.Entries = append(slices.Clone(moved.Entries), kds[1].Entries[0])
	_, err = Open(&moved, sender.Public(), devs[0])
	requireIs(t, err, ErrBadSignature)
}

func TestKeyDistributionChunkEveryByteFlipRefused(t *testing.T) {
	sender, devs, rks := chunkParty(t, 4)
	kds, err := DistributeChunks(sender, detSession(t, "flip", convA, 1), rks, 2)
	if err != nil || len(kds) != 2 {
		t.Fatalf("%d chunks, %v; want 2", len(kds), err)
	}
	me := devs[0]
	_, chunk := chunkOf(kds, me.ID())
	flipEachByte(t, "key distribution chunk", chunk.Encode(), func(b []byte) error {
		kd, err := DecodeKeyDistribution(b)
		if err != nil {
			return err
		}
		_, err = Open(kd, sender.Public(), me)
		return err
	})
}

func TestDistributeIsTheOneChunkCase(t *testing.T) {
	sender, _, rks := chunkParty(t, 5)
	kds, err := DistributeChunks(sender, detSession(t, "one", convA, 1), rks, 5)
	if err != nil || len(kds) != 1 || len(kds[0].Entries) != 5 {
		t.Fatalf("5 recipients, 5 a chunk: %d chunks, %v; want 1 of 5", len(kds), err)
	}
	kd, err := Distribute(sender, detSession(t, "one", convA, 1), rks)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(kd.Recipients(), kds[0].Recipients()) || len(kd.Encode()) != len(kds[0].Encode()) {
		t.Fatal("Distribute and a single chunk differ in shape")
	}
	_, err = DistributeChunks(sender, detSession(t, "zero", convA, 1), rks, 0)
	requireIs(t, err, ErrMalformed)
}
