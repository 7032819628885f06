package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	record "github.com/libp2p/go-libp2p-record"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/gateway"
	"github.com/iagon/gridchat/keyregistry"
	"github.com/iagon/gridchat/relay"
	"github.com/iagon/gridchat/wire"
)

// DeliverySettings configures the WebSocket API, live delivery and presence. Zero fields take the defaults of
// gateway.DefaultWSLimits and relay.DefaultLimits.
type DeliverySettings struct {
	// WS are the WebSocket API's limits.
	WS gateway.WSLimits
	// Relay are the delivery service's limits.
	Relay relay.Limits
	// PresenceCacheSize bounds the presence cache (default 100,000 devices).
	PresenceCacheSize int
	// Clock is the clock of auth proofs and presence records. Default time.Now.
	Clock func() time.Time
	// DropEnvelope makes a misbehaving node, for tests only: it is asked about every envelope about to be
	// pushed to a device connected to this node, and when it returns true the envelope is not pushed but
	// reported delivered, as a node that silently loses envelopes would. It must not block. Nil in production.
	DropEnvelope func(env wire.Envelope) bool
}

func (s DeliverySettings) clock() func() time.Time {
	if s.Clock == nil {
		return time.Now
	}
	return s.Clock
}

// withPresenceValidator returns m plus the presence namespace's validator.
func withPresenceValidator(m map[string]record.Validator, s DeliverySettings) map[string]record.Validator {
	out := maps.Clone(m)
	if out == nil {
		out = make(map[string]record.Validator)
	}
	out[relay.PresenceNamespace] = relay.PresenceValidator{Now: s.clock(), TTL: s.WS.PresenceTTL}
	return out
}

// delivery is the node's WebSocket API, delivery service and presence.
type delivery struct {
	hub      *gateway.Hub
	relay    *relay.Service
	presence *relay.Presence
}

// startDelivery starts presence, the delivery service and the WebSocket API, and mounts the API on the gateway.
func (n *Node) startDelivery() error {
	s := n.cfg.Delivery
	d := &delivery{}
	var err error
	d.presence, err = relay.NewPresence(relay.PresenceConfig{
		Routing: n.dht, PubSub: n.pubsub, ProtocolPrefix: n.protocolPrefix(), CacheSize: s.PresenceCacheSize, TTL: s.WS.PresenceTTL,
		Now: s.clock(), Metrics: n.reg, Logger: n.log.With("part", "presence"),
	})
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	rlim := s.Relay
	if rlim.AckTimeout <= 0 {
		rlim.AckTimeout = s.WS.AckTimeout
	}
	addrs := make([]string, 0, len(n.host.Addrs()))
	for _, a := range n.host.Addrs() {
		addrs = append(addrs, a.String())
	}
	// The relay's limits with defaults filled in are announced in hello; build the hub first with them.
	lim := relay.DefaultLimits()
	if rlim.MaxCiphertext > 0 {
		lim.MaxCiphertext = rlim.MaxCiphertext
	}
	if rlim.MaxRecipients > 0 {
		lim.MaxRecipients = rlim.MaxRecipients
	}
	d.hub, err = gateway.NewHub(gateway.HubConfig{
		Gateway: n.host.ID().String(), GatewayID: []byte(n.host.ID()), Addrs: addrs,
		Directory: directoryKeys{n.dir}, Presence: d.presence, Limits: s.WS,
		MaxCiphertext: lim.MaxCiphertext, MaxRecipients: lim.MaxRecipients,
		Metrics: n.reg, Logger: n.log.With("part", "ws"), Now: s.clock(),
	})
	if err != nil {
		return errors.Join(fmt.Errorf("node: %w", err), d.close())
	}
	rcfg := relay.Config{
		Host: n.host, ProtocolPrefix: n.protocolPrefix(), Local: d.hub, Locator: d.presence, Limits: rlim,
		Metrics: n.reg, Logger: n.log.With("part", "relay"),
	}
	if s.DropEnvelope != nil {
		rcfg.Local = droppingLocal{Hub: d.hub, drop: s.DropEnvelope}
	}
	if n.mbox != nil {
		rcfg.Mailbox = mailboxPutter{n.mbox}
	}
	d.relay, err = relay.New(rcfg)
	if err != nil {
		return errors.Join(fmt.Errorf("node: %w", err), d.close())
	}
	n.deliv = d
	if err := d.hub.Handle(wire.OpSend, sendOp(d.relay)); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if err := n.gw.Handle("GET "+gateway.WSPath, d.hub); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	return nil
}

// sendOp is the "send" operation: relay dispatches the envelope in request order, and the response goes out
// when the last recipient's outcome arrives, without a goroutine waiting for it.
func sendOp(r *relay.Service) gateway.Handler {
	return func(ctx context.Context, c *gateway.Call) (any, error) {
		var req wire.SendRequest
		if err := wire.StrictUnmarshal(c.Body, &req); err != nil {
			return nil, wire.Errorf(wire.CodeBadRequest, "send body: %v", err)
		}
		p, err := r.Dispatch(ctx, c.Device, &req)
		if err != nil {
			return nil, err
		}
		return gateway.Async(func(respond func(any, error)) {
			p.Notify(func(r wire.SendResponse) { respond(r, nil) })
		}), nil
	}
}

// close stops the WebSocket API first (no new sends), then delivery, then presence.
func (d *delivery) close() error {
	var errs []error
	if d.hub != nil {
		errs = append(errs, d.hub.Close())
	}
	if d.relay != nil {
		errs = append(errs, d.relay.Close())
	}
	if d.presence != nil {
		errs = append(errs, d.presence.Close())
	}
	return errors.Join(errs...)
}

// droppingLocal is the hub as relay sees it on a node built to misbehave (DeliverySettings.DropEnvelope): the
// envelopes drop picks are reported delivered and never pushed.
type droppingLocal struct {
	*gateway.Hub
	drop func(wire.Envelope) bool
}

// Push is PushNotify with a channel.
func (l droppingLocal) Push(env wire.Envelope) <-chan wire.Outcome {
	ch := make(chan wire.Outcome, 1)
	l.PushNotify(env, func(o wire.Outcome) { ch <- o })
	return ch
}

// PushNotify pushes env through the hub unless drop picks it.
func (l droppingLocal) PushNotify(env wire.Envelope, done func(wire.Outcome)) {
	if l.drop(env) {
		done(wire.Outcome{Status: wire.StatusDelivered})
		return
	}
	l.Hub.PushNotify(env, done)
}

// directoryKeys adapts the key directory to the gateway's Directory.
type directoryKeys struct{ dir *keyregistry.Service }

func (k directoryKeys) DeviceKey(ctx context.Context, id e2ee.DeviceID) (gateway.DeviceKey, error) {
	if k.dir == nil {
		return gateway.DeviceKey{}, fmt.Errorf("node: device %s: no key directory: %w", id, gateway.ErrUnknownDevice)
	}
	a, err := k.dir.AuthDevice(ctx, id)
	if errors.Is(err, keyregistry.ErrNotFound) {
		return gateway.DeviceKey{}, fmt.Errorf("node: device %s: %w", id, gateway.ErrUnknownDevice)
	}
	if err != nil {
		return gateway.DeviceKey{}, err
	}
	return gateway.DeviceKey{Public: a.Public, Account: a.Account, Revoked: a.Revoked}, nil
}

// Hub returns the node's WebSocket API (socket table and operation registry).
func (n *Node) Hub() *gateway.Hub { return n.deliv.hub }

// Relay returns the node's delivery service.
func (n *Node) Relay() *relay.Service { return n.deliv.relay }

// Presence returns the node's presence service.
func (n *Node) Presence() *relay.Presence { return n.deliv.presence }

// WSURL returns the WebSocket API's URL, e.g. ws://127.0.0.1:8080/v1/ws.
func (n *Node) WSURL() string { return "ws" + strings.TrimPrefix(n.gw.URL(), "http") + gateway.WSPath }
