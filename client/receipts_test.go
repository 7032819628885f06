package client

import (
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/relay/mailbox/receipt"
	"github.com/iagon/gridchat/wire"
)

// Issue 14, acceptance 2: a "stored" status is believed only with receipts from a quorum of distinct replicas
// that verify for exactly this envelope; a forged receipt, or one replica's receipt counted twice, is refused.
func TestStoredStatusNeedsQuorumOfVerifiedDistinctReceipts(t *testing.T) {
	var sender, recipient e2ee.DeviceID
	rand.Read(sender[:])
	rand.Read(recipient[:])
	var id wire.MessageID
	rand.Read(id[:])
	ct := []byte("envelope ciphertext")
	sign := func(ct []byte) []byte {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		r := &receipt.Receipt{Replica: receipt.PeerID(pub), Device: recipient, MessageID: id,
			EnvelopeHash: receipt.EnvelopeHash(id, sender, recipient, ct), Time: time.Now()}
		if err := receipt.Sign(r, priv); err != nil {
			t.Fatal(err)
		}
		return r.Encode()
	}
	a, b := sign(ct), sign(ct)
	forged := sign(ct)
	forged[len(forged)-1] ^= 1
	other := sign([]byte("another envelope"))
	cases := []struct {
		name     string
		receipts [][]byte
		want     string
	}{
		{"two distinct replicas", [][]byte{a, b}, wire.StatusStored},
		{"one replica only", [][]byte{a}, wire.StatusFailed},
		{"one replica twice", [][]byte{a, a}, wire.StatusFailed},
		{"a forged receipt", [][]byte{a, forged}, wire.StatusFailed},
		{"a receipt for another envelope", [][]byte{a, other}, wire.StatusFailed},
		{"no receipts", nil, wire.StatusFailed},
	}
	for _, tc := range cases {
		resp := &wire.SendResponse{Results: []wire.RecipientResult{{DeviceID: recipient[:], Status: wire.StatusStored, Receipts: tc.receipts}}}
		st, err := verifyStatuses(sender, id, ct, []e2ee.DeviceID{recipient}, resp, 2)
		if err != nil {
			t.Fatal(err)
		}
		if st[0].Status != tc.want {
			t.Errorf("%s: status %s, want %s", tc.name, st[0].Status, tc.want)
		}
		if tc.want == wire.StatusFailed && st[0].Reason != ReasonBadReceipts {
			t.Errorf("%s: reason %q", tc.name, st[0].Reason)
		}
		if tc.want == wire.StatusStored && st[0].Receipts != 2 {
			t.Errorf("%s: %d receipts counted", tc.name, st[0].Receipts)
		}
	}
}
