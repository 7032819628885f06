package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/iagon/gridchat/client/store"
	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/e2ee/link"
)

// Linking a new device (docs/PROTOCOL.md §9.6). The old device (host) shows an invitation: a QR payload or a
// short code. The new device (joiner) parses it and both run e2ee/link's CPace exchange through a relay (a
// gateway rendezvous); everything after it travels in the link channel's AEAD frames:
//
//	host → joiner   PayloadAddDevice  the account's current chain ("this is the account you join")
//	joiner → host   PayloadDeviceOffer the new device's certificate for that account (e2ee.DeviceCert)
//	host → joiner   PayloadAddDevice  the chain with the host-signed add-device statement, as published
//	host → joiner   PayloadDone
//
// The new device then opens its state and connects; the host sends it the conversation history through the
// grid (SendHistory), end to end encrypted to the new device.

// LinkRelay carries the opaque link frames between the two devices of one linking run.
type LinkRelay interface {
	// Send delivers one frame to the other device.
	Send(ctx context.Context, frame []byte) error
	// Recv returns the next frame from the other device.
	Recv(ctx context.Context) ([]byte, error)
	// Close ends the run's relay.
	Close() error
}

// ErrLinkRefused means the other device sent something the linking protocol does not allow.
var ErrLinkRefused = errors.New("client: link refused")

// Invitation is a host's offer to link a new device: show QRPayload (as a QR code) or ShortCode to the user.
type Invitation struct {
	host *link.Host
	// Kind is the invitation's form.
	Kind link.Kind
	// QRPayload is set for link.KindQR.
	QRPayload []byte
	// ShortCode is set for link.KindShortCode.
	ShortCode string
}

// Rendezvous returns the ID the relay pairs the two devices under.
func (i *Invitation) Rendezvous() []byte { return i.host.Rendezvous() }

// InviteDevice makes a single-use invitation of the given kind (valid for link.DefaultLifetime).
func (c *Client) InviteDevice(kind link.Kind) (*Invitation, error) {
	h, err := link.NewHost(kind, link.Options{Now: c.cfg.Now})
	if err != nil {
		return nil, err
	}
	inv := &Invitation{host: h, Kind: kind}
	switch kind {
	case link.KindQR:
		inv.QRPayload, err = h.QRPayload()
	case link.KindShortCode:
		inv.ShortCode, err = h.ShortCode()
	}
	if err != nil {
		return nil, err
	}
	return inv, nil
}

// HostLink runs the host side of inv over relay: it checks the joiner's code through CPace, signs an
// add-device statement for the new device, publishes the extended chain, and returns the new device's ID. A
// wrong code fails with link.ErrWrongCode and reveals nothing about the invitation's secret.
func (c *Client) HostLink(ctx context.Context, inv *Invitation, relay LinkRelay) (e2ee.DeviceID, error) {
	defer relay.Close()
	shareA, err := relay.Recv(ctx)
	if err != nil {
		return e2ee.DeviceID{}, fmt.Errorf("client: link: waiting for the new device: %w", err)
	}
	shareB, err := inv.host.Respond(shareA)
	if err != nil {
		return e2ee.DeviceID{}, fmt.Errorf("client: link: %w", err)
	}
	if err := relay.Send(ctx, shareB); err != nil {
		return e2ee.DeviceID{}, err
	}
	confirmA, err := relay.Recv(ctx)
	if err != nil {
		return e2ee.DeviceID{}, err
	}
	ch, err := inv.host.Confirm(confirmA)
	if err != nil {
		return e2ee.DeviceID{}, fmt.Errorf("client: link: %w", err)
	}
	c.mu.Lock()
	chain := c.chain
	c.mu.Unlock()
	if err := sendLink(ctx, relay, ch, link.PayloadAddDevice, chain.Encode()); err != nil {
		return e2ee.DeviceID{}, err
	}
	kind, body, err := recvLink(ctx, relay, ch)
	if err != nil {
		return e2ee.DeviceID{}, err
	}
	if kind != link.PayloadDeviceOffer {
		return e2ee.DeviceID{}, fmt.Errorf("%w: expected a device offer, got payload %d", ErrLinkRefused, kind)
	}
	cert, err := e2ee.DecodeDeviceCert(body)
	if err != nil {
		return e2ee.DeviceID{}, fmt.Errorf("%w: %v", ErrLinkRefused, err)
	}
	if cert.Account != c.eng.self {
		return e2ee.DeviceID{}, fmt.Errorf("%w: certificate for another account", ErrLinkRefused)
	}
	if err := cert.Verify(); err != nil {
		return e2ee.DeviceID{}, fmt.Errorf("%w: %v", ErrLinkRefused, err)
	}
	next, err := c.appendStatement(ctx, &e2ee.AddDevice{Cert: cert})
	if err != nil {
		return e2ee.DeviceID{}, err
	}
	if err := sendLink(ctx, relay, ch, link.PayloadAddDevice, next.Encode()); err != nil {
		return e2ee.DeviceID{}, err
	}
	if err := sendLink(ctx, relay, ch, link.PayloadDone, nil); err != nil {
		return e2ee.DeviceID{}, err
	}
	return cert.Device.ID(), nil
}

func sendLink(ctx context.Context, relay LinkRelay, ch *link.Channel, kind link.PayloadKind, body []byte) error {
	f, err := ch.Seal(kind, body)
	if err != nil {
		return fmt.Errorf("client: link: %w", err)
	}
	return relay.Send(ctx, f)
}

func recvLink(ctx context.Context, relay LinkRelay, ch *link.Channel) (link.PayloadKind, []byte, error) {
	f, err := relay.Recv(ctx)
	if err != nil {
		return 0, nil, fmt.Errorf("client: link: %w", err)
	}
	kind, body, err := ch.Open(f)
	if err != nil {
		return 0, nil, fmt.Errorf("client: link: %w", err)
	}
	return kind, body, nil
}

// ParseInvitation turns what the user scanned (a QR payload) or typed (a short code) into a link ticket.
func ParseInvitation(qrPayload []byte, typed string) (link.Ticket, error) {
	if len(qrPayload) > 0 {
		return link.ParseQRPayload(qrPayload)
	}
	return link.ParseShortCode(strings.TrimSpace(typed))
}

// Link joins an existing account as a new device: it runs the joiner side of the linking protocol over relay
// with ticket, creates the device's keys and state in cfg.Dir (which must be empty), and opens the client.
// The old device then sends the history through the grid.
func Link(ctx context.Context, cfg Config, ticket link.Ticket, relay LinkRelay) (*Client, error) {
	defer relay.Close()
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	// Over a gateway, the new device's keys and certificate are dated by the gateway's clock (clock.go).
	clock := newGridClock(cfg.Now, 0)
	if gr, ok := relay.(*GatewayRelay); ok {
		if _, err := clock.observe(gr.g.cn); err != nil {
			return nil, err
		}
	}
	dev, err := e2ee.NewDeviceKeys(clock.now())
	if err != nil {
		return nil, err
	}
	j, shareA, err := link.Join(ticket, link.Options{Now: clock.now})
	if err != nil {
		return nil, fmt.Errorf("client: link: %w", err)
	}
	if err := relay.Send(ctx, shareA); err != nil {
		return nil, err
	}
	shareB, err := relay.Recv(ctx)
	if err != nil {
		return nil, err
	}
	ch, confirmA, err := j.Finish(shareB)
	if err != nil {
		return nil, fmt.Errorf("client: link: %w", err)
	}
	if err := relay.Send(ctx, confirmA); err != nil {
		return nil, err
	}
	kind, body, err := recvLink(ctx, relay, ch)
	if err != nil {
		return nil, err
	}
	if kind != link.PayloadAddDevice {
		return nil, fmt.Errorf("%w: expected the account chain, got payload %d", ErrLinkRefused, kind)
	}
	before, err := e2ee.DecodeChain(body)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrLinkRefused, err)
	}
	if _, err := e2ee.Replay(before); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrLinkRefused, err)
	}
	cert := e2ee.NewDeviceCert(dev, before.AccountID(), clock.now())
	if err := sendLink(ctx, relay, ch, link.PayloadDeviceOffer, cert.Encode()); err != nil {
		return nil, err
	}
	kind, body, err = recvLink(ctx, relay, ch)
	if err != nil {
		return nil, err
	}
	if kind != link.PayloadAddDevice {
		return nil, fmt.Errorf("%w: expected the extended chain, got payload %d", ErrLinkRefused, kind)
	}
	after, err := e2ee.DecodeChain(body)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrLinkRefused, err)
	}
	st, err := e2ee.Replay(after)
	if err != nil || e2ee.Compare(before, after) != e2ee.Extends {
		return nil, fmt.Errorf("%w: the extended chain does not verify or does not extend the first", ErrLinkRefused)
	}
	if _, ok := st.Device(dev.ID()); !ok {
		return nil, fmt.Errorf("%w: the new device is not in the account", ErrLinkRefused)
	}
	if kind, _, err := recvLink(ctx, relay, ch); err != nil || kind != link.PayloadDone {
		return nil, fmt.Errorf("%w: no end of link (%v)", ErrLinkRefused, err)
	}
	return create(cfg, dev, after, clock.Offset())
}

// create writes a new device's keys and account chain, and the clock offset they were made with, into an
// empty state directory and opens the client.
func create(cfg Config, dev *e2ee.DeviceKeys, chain *e2ee.Chain, offset time.Duration) (*Client, error) {
	return openState(cfg, func(st *store.Store) error {
		return st.Update(func(b *store.Batch) error {
			b.Put(bucketSelf, keyDevice, dev.Encode())
			b.Put(bucketSelf, keyChain, chain.Encode())
			b.Put(bucketChains, chain.AccountID().String(), chain.Encode())
			b.Put(bucketSelf, keyClockOffset, formatClockOffset(offset))
			return nil
		})
	})
}

// Devices returns this account's devices as its verified chain states them (fetched fresh from the
// directory when it answers).
func (c *Client) Devices(ctx context.Context) ([]e2ee.DeviceState, []e2ee.RevokedDevice, error) {
	st, err := c.accts.get(ctx, c.eng.self, true)
	if err != nil {
		return nil, nil, err
	}
	return slices.Clone(st.Devices), slices.Clone(st.Revoked), nil
}

// Revoke removes a device from this account: a revoke statement signed by this device, published to the
// directory. Senders stop encrypting to the device as soon as they see the new chain.
func (c *Client) Revoke(ctx context.Context, dev e2ee.DeviceID) error {
	if dev == c.dev.ID() {
		return errors.New("client: a device cannot revoke itself; revoke it from another device")
	}
	_, err := c.appendStatement(ctx, &e2ee.RevokeDevice{Device: dev})
	return err
}

// SetUsername claims a username for this account.
func (c *Client) SetUsername(ctx context.Context, name string) error {
	name = strings.ToLower(strings.TrimSpace(name))
	if !e2ee.ValidUsername(name) {
		return fmt.Errorf("client: %q is not a valid username (a-z, 0-9, '.', '_', '-')", name)
	}
	_, err := c.appendStatement(ctx, &e2ee.SetUsername{Username: name})
	return err
}

// appendStatement signs body onto a copy of this account's newest chain, publishes it, and adopts it.
func (c *Client) appendStatement(ctx context.Context, body e2ee.Body) (*e2ee.Chain, error) {
	// Start from the newest chain the directory has (another device may have appended since).
	if _, err := c.accts.get(ctx, c.eng.self, true); err == nil {
		if st, _ := c.accts.stored(c.eng.self); st != nil {
			c.adoptOwnChain(st)
		}
	}
	c.mu.Lock()
	next, err := e2ee.DecodeChain(c.chain.Encode())
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if _, err := next.Append(c.dev, body, c.cfg.Now()); err != nil {
		return nil, fmt.Errorf("client: sign %s: %w", body.Kind(), err)
	}
	if err := c.publishChain(ctx, next); err != nil {
		return nil, err
	}
	raw := next.Encode()
	if _, err := c.accts.adopt(raw, &c.eng.self); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.chain = next
	c.mu.Unlock()
	if err := c.st.Put(bucketSelf, keyChain, raw); err != nil {
		return nil, err
	}
	return next, nil
}
