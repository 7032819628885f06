package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/namespace"

	"github.com/iagon/gridchat/gateway"
	"github.com/iagon/gridchat/relay"
	"github.com/iagon/gridchat/relay/mailbox"
	"github.com/iagon/gridchat/wire"
)

// mailboxNamespace is the datastore namespace of the mailboxes this node keeps.
const mailboxNamespace = "/mailbox"

// MailboxSettings configures the node's mailbox service.
type MailboxSettings struct {
	// Limits are the replication factor, write quorum, TTL, count limit,
	// quotas and timers; zero fields take mailbox.DefaultLimits.
	Limits mailbox.Limits
	// Clock is the mailbox's clock (expiry, freshness). Default time.Now.
	Clock func() time.Time
	// DisableLoops turns off the timed expiry and repair rounds, for tests
	// that run them by hand.
	DisableLoops bool
}

// startMailbox starts the mailbox service: a replica for the mailboxes
// close to this node, and the client its gateway uses for all others.
func (n *Node) startMailbox() error {
	m := n.cfg.Mailbox
	mb, err := mailbox.New(mailbox.Config{
		Host:           n.host,
		ProtocolPrefix: n.protocolPrefix(),
		Router:         n.dht,
		Datastore:      namespace.Wrap(n.store, ds.NewKey(mailboxNamespace)),
		Limits:         m.Limits,
		Clock:          m.Clock,
		Metrics:        n.reg,
		Logger:         n.log.With("part", "mailbox"),
		DisableLoops:   m.DisableLoops,
	})
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.mbox = mb
	return nil
}

// Mailbox returns the node's mailbox service.
func (n *Node) Mailbox() *mailbox.Service { return n.mbox }

// OpMailboxFetch is the WebSocket operation a device sends after auth to
// receive its mailbox: body MailboxFetchRequest, response
// MailboxFetchResponse. The gateway then pushes the mailbox's envelopes as
// "envelope" pushes in delivery order, and new ones as they are stored, for
// as long as the connection lives; each "ack" deletes that envelope on every
// replica (docs/PROTOCOL.md §7, "Mailbox operations").
const OpMailboxFetch = "mailbox.fetch"

// MailboxFetchRequest is the body of "mailbox.fetch": a fetch request signed
// by the connection's device (mailbox.NewFetchRequest, with follow).
type MailboxFetchRequest struct {
	DevicePublic []byte `json:"device_public"`
	Request      []byte `json:"request"`
	Body         []byte `json:"body"`
}

// MailboxTombstone tells the client about one envelope that expired before
// it connected.
type MailboxTombstone struct {
	MessageID    []byte `json:"message_id"`
	SenderDevice []byte `json:"sender_device"`
	SentMS       int64  `json:"sent_ms"`
	ExpiredMS    int64  `json:"expired_ms"`
	Reason       string `json:"reason"` // "ttl" or "count"
}

// MailboxFetchResponse answers "mailbox.fetch" with the tombstones found.
type MailboxFetchResponse struct {
	Tombstones []MailboxTombstone `json:"tombstones"`
}

// registerMailboxOps adds "mailbox.fetch" to the WebSocket API and stops a
// connection's mailbox delivery when the connection ends.
func (n *Node) registerMailboxOps() error {
	hub := n.deliv.hub
	var (
		mu     sync.Mutex
		active = make(map[string]*mailbox.Delivery)
	)
	hub.OnConnClosed(func(connID string) {
		mu.Lock()
		d := active[connID]
		delete(active, connID)
		mu.Unlock()
		if d != nil {
			_ = d.Stop()
		}
	})
	return hub.Handle(OpMailboxFetch, func(_ context.Context, c *gateway.Call) (any, error) {
		var req MailboxFetchRequest
		if err := wire.StrictUnmarshal(c.Body, &req); err != nil {
			return nil, wire.Errorf(wire.CodeBadRequest, "mailbox.fetch body: %v", err)
		}
		sr := mailbox.SignedRequest{DevicePublic: req.DevicePublic, Request: req.Request, Body: req.Body}
		dev, err := mailbox.RequestDevice(sr)
		if err != nil {
			return nil, wire.Errorf(wire.CodeBadRequest, "%v", err)
		}
		if dev != c.Device {
			return nil, wire.Errorf(wire.CodeAuthFailed, "the request is for another device than this connection's")
		}
		connID := c.ConnID
		return gateway.Deferred(func(ctx context.Context) (any, error) {
			d, err := n.mbox.StartDelivery(ctx, sr, hub)
			if err != nil {
				return nil, mailboxWireError(err)
			}
			mu.Lock()
			old := active[connID]
			active[connID] = d
			mu.Unlock()
			if old != nil {
				_ = old.Stop()
			}
			if !hub.Connected(dev) {
				_ = d.Stop()
			}
			resp := MailboxFetchResponse{Tombstones: []MailboxTombstone{}}
			for _, t := range d.Tombstones {
				resp.Tombstones = append(resp.Tombstones, MailboxTombstone{
					MessageID: t.MessageID[:], SenderDevice: t.Sender[:], SentMS: t.Stamp / 1e6,
					ExpiredMS: t.Expired.UnixMilli(), Reason: t.Reason,
				})
			}
			return resp, nil
		}), nil
	})
}

// mailboxPutter adapts the mailbox service to relay's Mailbox: the replicas' receipts go back to the sender,
// and the mailbox's refusals become relay's, so the sender's status names the reason.
type mailboxPutter struct{ mb *mailbox.Service }

func (m mailboxPutter) Put(ctx context.Context, env wire.Envelope) ([][]byte, error) {
	st, err := m.mb.PutEnvelope(ctx, env)
	if err != nil {
		return nil, fmt.Errorf("node: mailbox put: %w", relayMailboxError(err))
	}
	return st.Receipts, nil
}

// relayMailboxError marks a mailbox refusal with relay's sentinel for it (the original stays wrapped).
func relayMailboxError(err error) error {
	var kind error
	switch {
	case errors.Is(err, mailbox.ErrSenderQuota):
		kind = relay.ErrMailboxQuota
	case errors.Is(err, mailbox.ErrMailboxFull):
		kind = relay.ErrMailboxFull
	case errors.Is(err, mailbox.ErrTooLarge):
		kind = relay.ErrMailboxTooLarge
	case errors.Is(err, mailbox.ErrRevoked):
		kind = relay.ErrMailboxRevoked
	case errors.Is(err, mailbox.ErrNoQuorum):
		kind = relay.ErrNotStored
	default:
		return err
	}
	return fmt.Errorf("%w: %w", kind, err)
}

// mailboxWireError maps a mailbox refusal to the gateway's error codes.
func mailboxWireError(err error) *wire.Error {
	switch {
	case errors.Is(err, mailbox.ErrUnauthorized), errors.Is(err, mailbox.ErrStale):
		return wire.Errorf(wire.CodeAuthFailed, "%v", err)
	case errors.Is(err, mailbox.ErrReplay):
		return wire.Errorf(wire.CodeBadNonce, "%v", err)
	case errors.Is(err, mailbox.ErrRevoked):
		return wire.Errorf(wire.CodeRevoked, "%v", err)
	case errors.Is(err, mailbox.ErrMalformed):
		return wire.Errorf(wire.CodeBadRequest, "%v", err)
	case errors.Is(err, mailbox.ErrBusy):
		return wire.Errorf(wire.CodeBusy, "%v", err)
	}
	return wire.Errorf(wire.CodeUnavailable, "%v", err)
}
