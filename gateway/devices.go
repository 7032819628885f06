package gateway

import (
	"bytes"
	"context"
	"errors"
	"time"

	"golang.org/x/time/rate"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/wire"
)

// deviceState is the socket table's entry for one device connected to this node.
type deviceState struct {
	conns   []*conn
	offline *presenceRec // the highest-sequence offline record any of its connections gave
	pending map[deliveryKey]*delivery
	// seen is the dedupe window: the last DedupeWindow envelopes pushed, in a ring.
	seen  map[deliveryKey]*delivery
	ring  []deliveryKey
	ringN int
}

type presenceRec struct {
	raw     []byte
	seq     uint64
	expires time.Time
}

type deliveryKey struct {
	sender wire.DeviceID
	msg    wire.MessageID
}

// delivery is one envelope pushed to a device, waiting for an acknowledgement.
type delivery struct {
	done    bool
	out     wire.Outcome
	waiters []func(wire.Outcome)
	timer   *time.Timer
}

func (ds *deviceState) remember(k deliveryKey, d *delivery, window int) {
	if len(ds.ring) < window {
		ds.ring = append(ds.ring, k)
	} else {
		delete(ds.seen, ds.ring[ds.ringN])
		ds.ring[ds.ringN] = k
		ds.ringN = (ds.ringN + 1) % window
	}
	ds.seen[k] = d
}

// Connected reports whether the device has an authenticated connection to this node.
func (h *Hub) Connected(device wire.DeviceID) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	ds := h.devices[device]
	return ds != nil && len(ds.conns) > 0
}

// ConnectedDevices returns how many devices have an authenticated connection to this node.
func (h *Hub) ConnectedDevices() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.devices)
}

// Push queues env as an "envelope" push on every connection of env.Recipient without blocking, and returns a
// channel that receives one outcome: delivered at the first "ack" from any connection of the device; offline
// if the device has no connection here; failed with "ack_timeout" after WSLimits.AckTimeout, "gone" if the
// device disconnects first, "busy" if MaxPendingPerDevice envelopes already await acknowledgement. An envelope
// whose (sender, message ID) is still in the device's dedupe window is not pushed again; it gets the first
// one's outcome, unless that one failed: then it is pushed again.
func (h *Hub) Push(env wire.Envelope) <-chan wire.Outcome {
	ch := make(chan wire.Outcome, 1)
	h.PushNotify(env, func(o wire.Outcome) { ch <- o })
	return ch
}

// PushNotify is Push with a callback instead of a channel: done is called exactly once with the outcome, either
// before PushNotify returns or later from the goroutine that settles the delivery (an acknowledgement, a
// timer, a disconnect). done must not block.
func (h *Hub) PushNotify(env wire.Envelope, done func(wire.Outcome)) {
	k := deliveryKey{sender: env.Sender, msg: env.MessageID}
	h.mu.Lock()
	ds := h.devices[env.Recipient]
	if ds == nil || len(ds.conns) == 0 {
		h.mu.Unlock()
		done(wire.Outcome{Status: wire.StatusOffline})
		return
	}
	// A duplicate gets the first push's outcome, unless that push failed (the device disconnected or did not
	// acknowledge in time): the envelope is then pushed again, as the mailbox does after relay stored it.
	prev := ds.seen[k]
	if d := prev; d != nil && (!d.done || d.out.Status != wire.StatusFailed) {
		h.metrics.dropped.WithLabelValues("duplicate").Inc()
		if d.done {
			out := d.out
			h.mu.Unlock()
			done(out)
			return
		}
		d.waiters = append(d.waiters, done)
		h.mu.Unlock()
		return
	}
	if len(ds.pending) >= h.lim.MaxPendingPerDevice {
		h.mu.Unlock()
		h.metrics.dropped.WithLabelValues("device_busy").Inc()
		done(wire.Failed(wire.CodeBusy, wire.FailBusy))
		return
	}
	d := &delivery{waiters: []func(wire.Outcome){done}}
	if prev != nil {
		ds.seen[k] = d // already in the ring
	} else {
		ds.remember(k, d, h.lim.DedupeWindow)
	}
	ds.pending[k] = d
	h.metrics.pending.Inc()
	recipient := env.Recipient
	d.timer = time.AfterFunc(h.lim.AckTimeout, func() {
		h.resolve(recipient, k, wire.Failed(wire.CodeUnavailable, wire.FailAckTimeout))
	})
	conns := append([]*conn(nil), ds.conns...)
	h.mu.Unlock()

	frame, err := wire.EncodePush(wire.PushEnvelope, wire.EnvelopePush{
		MessageID: env.MessageID[:], SenderDevice: env.Sender[:], Ciphertext: env.Ciphertext,
	})
	if err != nil {
		h.resolve(recipient, k, wire.Failed(wire.CodeInternal, wire.FailInternal))
		return
	}
	h.metrics.pushes.Inc()
	for _, c := range conns {
		c.enqueue(frame) // a full queue closes that connection; the last one gone resolves the delivery
	}
}

// resolve settles a pending delivery once.
func (h *Hub) resolve(device wire.DeviceID, k deliveryKey, out wire.Outcome) {
	h.mu.Lock()
	ds := h.devices[device]
	if ds == nil {
		h.mu.Unlock()
		return
	}
	d := ds.pending[k]
	if d == nil {
		h.mu.Unlock()
		return
	}
	delete(ds.pending, k)
	waiters := h.settle(d, out)
	h.mu.Unlock()
	for _, w := range waiters {
		w(out)
	}
}

// settle marks d done with out and returns its waiters; h.mu must be held.
func (h *Hub) settle(d *delivery, out wire.Outcome) []func(wire.Outcome) {
	d.done, d.out = true, out
	h.metrics.pending.Dec()
	if d.timer != nil {
		d.timer.Stop()
	}
	w := d.waiters
	d.waiters = nil
	return w
}

// attach enters an authenticated connection in the socket table.
func (h *Hub) attach(c *conn, dev wire.DeviceID, acct e2ee.AccountID, off *presenceRec) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return wire.Errorf(wire.CodeUnavailable, "node shutting down")
	}
	ds := h.devices[dev]
	if ds == nil {
		ds = &deviceState{pending: make(map[deliveryKey]*delivery), seen: make(map[deliveryKey]*delivery)}
		h.devices[dev] = ds
	}
	if len(ds.conns) >= h.lim.MaxConnsPerDevice {
		if len(ds.conns) == 0 {
			delete(h.devices, dev)
		}
		return wire.Errorf(wire.CodeBusy, "device has %d connections to this node", len(ds.conns))
	}
	ds.conns = append(ds.conns, c)
	if ds.offline == nil || off.seq > ds.offline.seq {
		ds.offline = off
	}
	as := h.accounts[acct]
	if as == nil {
		as = &accountState{lim: rate.NewLimiter(rate.Limit(h.lim.AccountRequestsPerSecond), h.lim.AccountRequestBurst)}
		h.accounts[acct] = as
	}
	as.conns++
	c.mu.Lock()
	c.authed, c.device, c.account, c.acctLim = true, dev, acct, as.lim
	c.mu.Unlock()
	h.metrics.authed.Inc()
	return nil
}

// unregister removes a finished connection. When it was its device's last, pending deliveries fail ("gone") and
// the device's offline record is published.
func (h *Hub) unregister(c *conn) {
	authed, dev, acct, _ := c.identity()
	var waiters []func(wire.Outcome)
	var offline *presenceRec
	h.mu.Lock()
	if _, ok := h.conns[c]; !ok {
		h.mu.Unlock()
		return
	}
	delete(h.conns, c)
	h.metrics.conns.Dec()
	if authed {
		h.metrics.authed.Dec()
		if ds := h.devices[dev]; ds != nil {
			for i, x := range ds.conns {
				if x == c {
					ds.conns = append(ds.conns[:i], ds.conns[i+1:]...)
					break
				}
			}
			if len(ds.conns) == 0 {
				gone := wire.Failed(wire.CodeUnavailable, wire.FailGone)
				for k, d := range ds.pending {
					delete(ds.pending, k)
					waiters = append(waiters, h.settle(d, gone)...)
				}
				offline = ds.offline
				delete(h.devices, dev)
			}
		}
		if as := h.accounts[acct]; as != nil {
			if as.conns--; as.conns <= 0 {
				delete(h.accounts, acct)
			}
		}
	}
	h.mu.Unlock()
	for _, w := range waiters {
		w(wire.Failed(wire.CodeUnavailable, wire.FailGone))
	}
	if offline != nil && h.cfg.Presence != nil && h.now().Before(offline.expires) {
		if err := h.cfg.Presence.Publish(context.Background(), offline.raw); err != nil {
			h.log.Debug("gateway: publish offline presence", "err", err)
		}
	}
}

func (h *Hub) authFail(code wire.Code, format string, args ...any) error {
	return &authError{wire.Errorf(code, format, args...)}
}

func (h *Hub) opAuth(ctx context.Context, call *Call) (any, error) {
	if call.Authenticated {
		return nil, wire.Errorf(wire.CodeAlreadyAuthenticated, "connection already authenticated")
	}
	var req wire.AuthRequest
	if err := wire.StrictUnmarshal(call.Body, &req); err != nil {
		return nil, wire.Errorf(wire.CodeBadRequest, "auth body: %v", err)
	}
	nonce, err := call.TakeNonce()
	if err != nil {
		return nil, h.authFail(wire.CodeBadNonce, "the hello nonce of this connection was already used")
	}
	if !bytes.Equal(req.Nonce, nonce) {
		return nil, h.authFail(wire.CodeBadNonce, "nonce is not this connection's hello nonce")
	}
	dev, err := wire.ParseDeviceID(req.DeviceID)
	if err != nil {
		return nil, h.authFail(wire.CodeAuthFailed, "device_id: %v", err)
	}
	key, err := h.cfg.Directory.DeviceKey(ctx, e2ee.DeviceID(dev))
	switch {
	case errors.Is(err, ErrUnknownDevice):
		return nil, h.authFail(wire.CodeAuthFailed, "unknown device")
	case err != nil:
		h.log.Warn("gateway: directory lookup", "err", err)
		return nil, h.authFail(wire.CodeUnavailable, "directory unavailable; retry")
	case key.Revoked:
		return nil, h.authFail(wire.CodeRevoked, "device revoked")
	}
	proof := e2ee.AuthProof{Gateway: h.cfg.GatewayID, Nonce: nonce, Device: e2ee.DeviceID(dev),
		Time: time.Unix(req.Time, 0).UTC(), Sig: req.Signature}
	if err := proof.Verify(key.Public, h.cfg.GatewayID, nonce, h.now(), h.lim.ClockSkew); err != nil {
		return nil, h.authFail(wire.CodeAuthFailed, "auth proof does not verify")
	}
	on, off, err := h.checkPresence(dev, req.Presence, req.Offline)
	if err != nil {
		return nil, h.authFail(wire.CodeAuthFailed, "%v", err)
	}
	if err := h.attach(call.conn, dev, key.Account, off); err != nil {
		return nil, &authError{h.errorFor(wire.OpAuth, err)}
	}
	call.conn.ws.SetReadLimit(h.lim.MaxFrameBytes)
	h.publish(ctx, on)
	return wire.AuthResponse{DeviceID: dev[:], AccountID: key.Account[:]}, nil
}

func (h *Hub) opPresence(ctx context.Context, call *Call) (any, error) {
	var req wire.PresenceUpdate
	if err := wire.StrictUnmarshal(call.Body, &req); err != nil {
		return nil, wire.Errorf(wire.CodeBadRequest, "presence body: %v", err)
	}
	on, off, err := h.checkPresence(call.Device, req.Presence, req.Offline)
	if err != nil {
		return nil, wire.Errorf(wire.CodeBadRequest, "%v", err)
	}
	h.mu.Lock()
	if ds := h.devices[call.Device]; ds != nil && (ds.offline == nil || off.seq > ds.offline.seq) {
		ds.offline = off
	}
	h.mu.Unlock()
	h.publish(ctx, on)
	return nil, nil
}

func (h *Hub) publish(ctx context.Context, on *presenceRec) {
	if h.cfg.Presence == nil {
		return
	}
	if err := h.cfg.Presence.Publish(ctx, on.raw); err != nil {
		h.log.Debug("gateway: publish presence", "err", err)
	}
}

// checkPresence verifies a connection's online and offline presence records: signed by dev, for this gateway,
// current, and the offline one later in sequence.
func (h *Hub) checkPresence(dev wire.DeviceID, online, offline []byte) (*presenceRec, *presenceRec, error) {
	now := h.now()
	on, err := wire.OpenPresence(online, now, h.lim.PresenceTTL)
	if err != nil {
		return nil, nil, errors.New("presence: record does not verify or has expired")
	}
	off, err := wire.OpenPresence(offline, now, h.lim.PresenceTTL)
	if err != nil {
		return nil, nil, errors.New("presence: offline record does not verify or has expired")
	}
	switch {
	case on.Device != dev || off.Device != dev:
		return nil, nil, errors.New("presence: records are not this device's")
	case on.Gateway != h.cfg.Gateway || off.Gateway != h.cfg.Gateway:
		return nil, nil, errors.New("presence: records name another gateway")
	case !on.Online || off.Online:
		return nil, nil, errors.New("presence: need one online and one offline record")
	case off.Seq <= on.Seq:
		return nil, nil, errors.New("presence: offline record must have a higher sequence number")
	}
	return &presenceRec{raw: online, seq: on.Seq, expires: on.Expires},
		&presenceRec{raw: offline, seq: off.Seq, expires: off.Expires}, nil
}

func (h *Hub) opAck(_ context.Context, call *Call) (any, error) {
	var a wire.Ack
	if err := wire.StrictUnmarshal(call.Body, &a); err != nil {
		return nil, wire.Errorf(wire.CodeBadRequest, "ack body: %v", err)
	}
	senders, msgs, err := a.Entries()
	if err != nil {
		return nil, err
	}
	h.metrics.acks.Add(float64(len(msgs)))
	delivered := wire.Outcome{Status: wire.StatusDelivered}
	for i := range msgs {
		h.resolve(call.Device, deliveryKey{sender: senders[i], msg: msgs[i]}, delivered)
	}
	return nil, nil
}

func (h *Hub) wireLimits() wire.Limits {
	return wire.Limits{
		MaxFrameBytes: int(h.lim.MaxFrameBytes), MaxInFlight: h.lim.MaxInFlight,
		RequestsPerSecond: h.lim.RequestsPerSecond, RequestBurst: h.lim.RequestBurst,
		HandshakeTimeoutMS: h.lim.HandshakeTimeout.Milliseconds(), IdleTimeoutMS: h.lim.IdleTimeout.Milliseconds(),
		MaxCiphertextBytes: h.cfg.MaxCiphertext, MaxRecipients: h.cfg.MaxRecipients,
	}
}
