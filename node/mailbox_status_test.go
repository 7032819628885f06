package node_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/gateway/gatewaytest"
	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/node"
	"github.com/iagon/gridchat/relay/mailbox/receipt"
	"github.com/iagon/gridchat/wire"
)

// sendOne sends one envelope over ws and returns the single recipient's result.
func sendOne(t *testing.T, c *gatewaytest.Client, id int, ct []byte, to *e2ee.DeviceKeys) wire.RecipientResult {
	t.Helper()
	r, err := c.Send(deliveryCtx(t), msgID(id), ct, to.ID())
	if err != nil {
		t.Fatalf("send %d: %v", id, err)
	}
	if len(r.Results) != 1 {
		t.Fatalf("send %d: %d results", id, len(r.Results))
	}
	return r.Results[0]
}

func wantFailed(t *testing.T, what string, r wire.RecipientResult, code wire.Code, reason string) {
	t.Helper()
	if r.Status != wire.StatusFailed || r.Code != code || r.Reason != reason || len(r.Receipts) != 0 {
		t.Fatalf("%s: got %+v, want failed %d %q without receipts", what, r, code, reason)
	}
}

// TestStoredStatusCarriesQuorumOfVerifiableReceipts sends over a real WebSocket to an offline device: the
// "stored" result carries receipts from a write quorum of distinct replicas that receipt.VerifyReceipts accepts
// for exactly what was sent, and that it refuses for any other ciphertext.
func TestStoredStatusCarriesQuorumOfVerifiableReceipts(t *testing.T) {
	nodes := gridtest.Swarm(t, 3, gridtest.InMemory())
	alice, bob := registerAccount(t, nodes[0]), registerAccount(t, nodes[1])
	ca := connect(t, nodes[0], alice.devs[0], gatewaytest.Options{})
	ct := []byte("for bob, who is offline")
	r := sendOne(t, ca, 1, ct, bob.devs[0])
	if r.Status != wire.StatusStored {
		t.Fatalf("status %+v, want stored", r)
	}
	quorum := nodes[0].Mailbox().Limits().WriteQuorum
	var mid [16]byte
	copy(mid[:], msgID(1))
	want := receipt.Expect{Device: bob.devs[0].ID(), MessageID: mid,
		EnvelopeHash: receipt.EnvelopeHash(mid, alice.devs[0].ID(), bob.devs[0].ID(), ct)}
	got, err := receipt.VerifyReceipts(r.Receipts, want, quorum)
	if err != nil {
		t.Fatalf("receipts of the stored status: %v", err)
	}
	if len(got) < quorum {
		t.Fatalf("%d receipts, quorum %d", len(got), quorum)
	}
	other := want
	other.EnvelopeHash = receipt.EnvelopeHash(mid, alice.devs[0].ID(), bob.devs[0].ID(), []byte("something else"))
	if _, err := receipt.VerifyReceipts(r.Receipts, other, quorum); !errors.Is(err, receipt.ErrMismatch) {
		t.Fatalf("receipts verified for another ciphertext: %v", err)
	}
	if len(r.Receipts) >= 2 {
		twice := [][]byte{r.Receipts[0], r.Receipts[0]}
		if _, err := receipt.VerifyReceipts(twice, want, 2); !errors.Is(err, receipt.ErrDuplicateReplica) {
			t.Fatalf("one replica counted twice: %v", err)
		}
	}
}

// TestMailboxRefusalsReachTheSenderAsClearStatuses sends over a real WebSocket to offline devices whose
// mailboxes refuse: past the sender's quota, past the mailbox's byte quota, over the envelope size limit, for a
// revoked device, and without a write quorum of replicas. Each gets its own failure code and reason, not
// "internal".
func TestMailboxRefusalsReachTheSenderAsClearStatuses(t *testing.T) {
	nodes := gridtest.Swarm(t, 3, gridtest.InMemory(), gridtest.Configure(func(_ int, cfg *node.Config) {
		cfg.Mailbox.Limits.Replicas = 3
		cfg.Mailbox.Limits.WriteQuorum = 2
		cfg.Mailbox.Limits.MaxPerSender = 2
		cfg.Mailbox.Limits.MaxMailboxBytes = 3000
		cfg.Mailbox.Limits.MaxEnvelopeBytes = 2048
	}))
	ctx := deliveryCtx(t)
	alice, carol := registerAccount(t, nodes[0]), registerAccount(t, nodes[0])
	quotaBob, fullBob, bigBob, revokedBob, lostBob :=
		registerAccount(t, nodes[1]), registerAccount(t, nodes[1]), registerAccount(t, nodes[1]),
		registerAccount(t, nodes[1]), registerAccount(t, nodes[1])
	ca := connect(t, nodes[0], alice.devs[0], gatewaytest.Options{})
	cc := connect(t, nodes[0], carol.devs[0], gatewaytest.Options{})
	small := []byte("hello")
	id := 0
	next := func() int { id++; return id }

	// Sender quota: two envelopes from alice fit, the third does not.
	for range 2 {
		if r := sendOne(t, ca, next(), small, quotaBob.devs[0]); r.Status != wire.StatusStored {
			t.Fatalf("within quota: %+v", r)
		}
	}
	wantFailed(t, "sender quota", sendOne(t, ca, next(), small, quotaBob.devs[0]), wire.CodeQuota, wire.FailSenderQuota)

	// Mailbox byte quota: 2 × 1,500 bytes from alice fill 3,000 bytes; carol's 1,500 more do not fit.
	half := bytes.Repeat([]byte{7}, 1500)
	for range 2 {
		if r := sendOne(t, ca, next(), half, fullBob.devs[0]); r.Status != wire.StatusStored {
			t.Fatalf("within the byte quota: %+v", r)
		}
	}
	wantFailed(t, "mailbox full", sendOne(t, cc, next(), half, fullBob.devs[0]), wire.CodeQuota, wire.FailMailboxFull)

	// Size: within the gateway's limit (64 KiB) but over the mailbox's (2 KiB).
	wantFailed(t, "too large", sendOne(t, ca, next(), bytes.Repeat([]byte{1}, 3000), bigBob.devs[0]),
		wire.CodeTooLarge, wire.FailTooLarge)

	// Revoked: every replica has dropped the device's mailbox.
	for _, nd := range nodes {
		if err := nd.Mailbox().Revoke(ctx, wire.DeviceID(revokedBob.devs[0].ID())); err != nil {
			t.Fatal(err)
		}
	}
	wantFailed(t, "revoked", sendOne(t, ca, next(), small, revokedBob.devs[0]), wire.CodeRevoked, wire.FailRevoked)

	// No quorum: with two of the three nodes gone, only the sender's node can store (1 < quorum 2).
	for _, nd := range nodes[1:] {
		if err := nd.Close(); err != nil {
			t.Fatal(err)
		}
	}
	wantFailed(t, "no quorum", sendOne(t, ca, next(), small, lostBob.devs[0]), wire.CodeUnavailable, wire.FailNotStored)
}
