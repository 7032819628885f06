package client

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/relay/mailbox/receipt"
	"github.com/iagon/gridchat/wire"
)

// ReasonBadReceipts is the failure reason the client gives a "stored" status whose replica receipts do not
// verify: forged, for another envelope, two from one replica, or fewer than the write quorum.
const ReasonBadReceipts = "bad_receipts"

// statuses turns a send response into per-device delivery statuses, in request order.
func (c *Client) statuses(id wire.MessageID, to []e2ee.DeviceID, ciphertext []byte, resp *wire.SendResponse) ([]DeliveryStatus, error) {
	return verifyStatuses(c.dev.ID(), id, ciphertext, to, resp, c.cfg.StoredQuorum)
}

// verifyStatuses checks every "stored" result's receipts: a quorum of distinct mailbox replicas must have
// signed that they wrote exactly this envelope. A result that fails is reported as failed (ReasonBadReceipts).
func verifyStatuses(sender e2ee.DeviceID, id wire.MessageID, ciphertext []byte, to []e2ee.DeviceID, resp *wire.SendResponse, quorum int) ([]DeliveryStatus, error) {
	if len(resp.Results) != len(to) {
		return nil, fmt.Errorf("client: send: %d results for %d recipients", len(resp.Results), len(to))
	}
	out := make([]DeliveryStatus, len(to))
	for i, r := range resp.Results {
		if !bytes.Equal(r.DeviceID, to[i][:]) {
			return nil, fmt.Errorf("client: send: result %d names another device", i)
		}
		out[i] = DeliveryStatus{Device: to[i], Status: r.Status, Reason: r.Reason}
		if r.Status != wire.StatusStored {
			continue
		}
		want := receipt.Expect{Device: to[i], MessageID: id,
			EnvelopeHash: receipt.EnvelopeHash(id, sender, to[i], ciphertext)}
		rs, err := receipt.VerifyReceipts(r.Receipts, want, quorum)
		if err != nil {
			out[i].Status, out[i].Reason = wire.StatusFailed, ReasonBadReceipts
			continue
		}
		out[i].Receipts = len(rs)
	}
	return out, nil
}

// handleOtherPush handles pushes other than envelopes.
func (c *Client) handleOtherPush(p *wire.Push) {
	switch p.Name {
	case pushLinkFrame:
		c.deliverLinkFrame(p)
	case pushLinkClosed:
		c.deliverLinkClosed(p)
	default:
		c.log.Debug("ignoring push", "name", p.Name)
	}
}

// Mailbox fetch (docs/PROTOCOL.md §7, "Mailbox operations"): after auth the client asks its gateway to deliver
// its mailbox with a fetch request it signs itself, so no gateway can read a device's mailbox without it.
const (
	opMailboxFetch      = "mailbox.fetch"
	purposeMailboxFetch = "mailbox-fetch"
)

type mailboxFetchBody struct {
	Device []byte `cbor:"1,keyasint"`
	Follow bool   `cbor:"2,keyasint,omitempty"`
}

type mailboxFetchRequest struct {
	DevicePublic []byte `json:"device_public"`
	Request      []byte `json:"request"`
	Body         []byte `json:"body"`
}

type mailboxTombstone struct {
	MessageID    []byte `json:"message_id"`
	SenderDevice []byte `json:"sender_device"`
	SentMS       int64  `json:"sent_ms"`
	ExpiredMS    int64  `json:"expired_ms"`
	Reason       string `json:"reason"`
}

type mailboxFetchResponse struct {
	Tombstones []mailboxTombstone `json:"tombstones"`
}

// fetchMailbox starts the delivery of this device's mailbox on cn and reports what expired before this device
// connected as gap events (one per sender device and reason).
func (c *Client) fetchMailbox(cn *conn) {
	id := c.dev.ID()
	body, err := c.cd.enc.Marshal(mailboxFetchBody{Device: id[:], Follow: true})
	if err != nil {
		return
	}
	q, err := e2ee.SignRequest(c.dev, purposeMailboxFetch, body, c.cfg.Now())
	if err != nil {
		return
	}
	req := mailboxFetchRequest{DevicePublic: c.dev.Public().Encode(), Request: q.Encode(), Body: body}
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.CallTimeout)
	defer cancel()
	var resp mailboxFetchResponse
	if err := cn.call(ctx, opMailboxFetch, req, &resp); err != nil {
		if !errors.Is(err, wire.ErrUnknownOp) && c.ctx.Err() == nil && cn.Err() == nil {
			c.log.Warn("mailbox fetch failed", "err", err)
		}
		return
	}
	c.reportTombstones(resp.Tombstones)
}

func (c *Client) reportTombstones(ts []mailboxTombstone) {
	type key struct {
		dev    e2ee.DeviceID
		reason GapReason
	}
	counts := map[key]int{}
	var order []key
	for _, t := range ts {
		if len(t.SenderDevice) != len(e2ee.DeviceID{}) {
			continue
		}
		// Each tombstone is reported once, even if a later fetch returns it again.
		idKey := "tomb/" + hex.EncodeToString(t.MessageID)
		if _, seen := c.st.Get(bucketSeen, idKey); seen {
			continue
		}
		_ = c.eng.markSeen(idKey) // on the engine's clock, which it prunes the seen set by
		r := GapExpired
		if t.Reason == "count" {
			r = GapEvicted
		}
		k := key{e2ee.DeviceID(t.SenderDevice), r}
		if counts[k] == 0 {
			order = append(order, k)
		}
		counts[k]++
	}
	for _, k := range order {
		c.ev.push(&GapEvent{SenderDevice: k.dev, Reason: k.reason, Count: counts[k]})
	}
}
