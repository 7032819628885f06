package receipt_test

import (
	"crypto/ed25519"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/iagon/gridchat/relay/mailbox/receipt"
)

type replica struct {
	id  []byte
	key ed25519.PrivateKey
}

func newReplica(t testing.TB) replica {
	priv, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := priv.Raw()
	return replica{id: []byte(id), key: ed25519.PrivateKey(raw)}
}

var want = receipt.Expect{Device: [32]byte{1}, MessageID: [16]byte{2},
	EnvelopeHash: receipt.EnvelopeHash([16]byte{2}, [32]byte{3}, [32]byte{1}, []byte("ciphertext"))}

func sign(t testing.TB, r replica) []byte {
	rc := receipt.Receipt{Replica: r.id, Device: want.Device, MessageID: want.MessageID,
		EnvelopeHash: want.EnvelopeHash, Time: time.Now()}
	if err := receipt.Sign(&rc, r.key); err != nil {
		t.Fatal(err)
	}
	return rc.Encode()
}

func TestPublicKeyIsReadFromLibp2pPeerIDWithoutLibp2p(t *testing.T) {
	r := newReplica(t)
	pub, err := receipt.PublicKey(r.id)
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(r.key.Public()) {
		t.Fatal("extracted key differs")
	}
	if string(receipt.PeerID(pub)) != string(r.id) {
		t.Fatal("PeerID does not invert PublicKey")
	}
}

func TestQuorumOfDistinctVerifyingReceiptsIsAccepted(t *testing.T) {
	r1, r2, r3 := newReplica(t), newReplica(t), newReplica(t)
	got, err := receipt.VerifyReceipts([][]byte{sign(t, r1), sign(t, r2), sign(t, r3)}, want, 2)
	if err != nil || len(got) != 3 {
		t.Fatalf("%d %v", len(got), err)
	}
}

func TestForgedReceiptIsRefused(t *testing.T) {
	r1, r2 := newReplica(t), newReplica(t)
	good := sign(t, r2)
	rc, _ := receipt.Decode(sign(t, r1))
	rc.Signature[0] ^= 1
	if _, err := receipt.VerifyReceipts([][]byte{rc.Encode(), good}, want, 2); !errors.Is(err, receipt.ErrBadSignature) {
		t.Fatalf("flipped signature: %v", err)
	}
	// Signed by another key than the named replica's.
	rc2 := receipt.Receipt{Replica: r1.id, Device: want.Device, MessageID: want.MessageID, EnvelopeHash: want.EnvelopeHash, Time: time.Now()}
	rc2.Signature = ed25519.Sign(r2.key, rc2.Transcript())
	if _, err := receipt.VerifyReceipts([][]byte{rc2.Encode(), good}, want, 2); !errors.Is(err, receipt.ErrBadSignature) {
		t.Fatalf("signature by another replica: %v", err)
	}
	// For another envelope.
	other := want
	other.EnvelopeHash[0] ^= 1
	if _, err := receipt.VerifyReceipts([][]byte{sign(t, r1), good}, other, 2); !errors.Is(err, receipt.ErrMismatch) {
		t.Fatalf("receipt for another envelope: %v", err)
	}
}

func TestTwoReceiptsFromOneReplicaAreNotCountedTwice(t *testing.T) {
	r1 := newReplica(t)
	a, b := sign(t, r1), sign(t, r1)
	if _, err := receipt.VerifyReceipts([][]byte{a, b}, want, 2); !errors.Is(err, receipt.ErrDuplicateReplica) {
		t.Fatalf("two receipts from one replica: %v", err)
	}
	if _, err := receipt.VerifyReceipts([][]byte{a}, want, 2); !errors.Is(err, receipt.ErrNoQuorum) {
		t.Fatalf("one receipt for a quorum of two: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(sign(f, newReplica(f)))
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := receipt.Decode(b)
		if err != nil {
			return
		}
		if string(r.Encode()) != string(b) {
			t.Fatal("decoded receipt does not re-encode to its input")
		}
	})
}
