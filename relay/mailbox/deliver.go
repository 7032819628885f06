package mailbox

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/iagon/gridchat/wire"
)

// Pusher pushes an envelope to a device connected to this gateway and reports the client's acknowledgement
// (the gateway's WebSocket hub implements it): wire.StatusDelivered once the client acknowledged it.
type Pusher interface {
	Push(env wire.Envelope) <-chan wire.Outcome
}

// deliverWindow is how many envelopes a delivery keeps pushed and unacknowledged at once.
const deliverWindow = 64

// Delivery is a device's mailbox being delivered to its connection on this gateway.
type Delivery struct {
	// Tombstones are the envelopes that expired before the device connected; they are deleted from the
	// mailbox once handed over here.
	Tombstones []Tombstone

	ss     *Session
	first  *Envelope
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// StartDelivery opens a following fetch of the device's mailbox with its signed request and delivers it to the
// device's connection through p: envelopes are pushed in delivery order (at most deliverWindow awaiting
// acknowledgement), and each envelope the client acknowledges is deleted on every replica. Envelopes stored
// while the device stays connected are pushed as they arrive. The tombstones found first are returned in the
// Delivery for the caller to hand to the client. The delivery runs until Stop or until the mailbox's replicas
// are all gone.
func (s *Service) StartDelivery(ctx context.Context, r SignedRequest, p Pusher) (*Delivery, error) {
	ss, err := s.Open(ctx, r)
	if err != nil {
		return nil, err
	}
	if !ss.follow {
		ss.Close()
		return nil, errorf(StatusMalformed, "a delivery needs a following fetch")
	}
	d := &Delivery{ss: ss, done: make(chan struct{})}
	// Collect the tombstones, which come first, up to the first envelope or the end of the snapshot.
	var toAck []wire.MessageID
collect:
	for {
		it, caughtUp, err := ss.nextOrCaughtUp(ctx)
		switch {
		case err != nil:
			ss.Close()
			return nil, fmt.Errorf("mailbox: deliver: %w", err)
		case caughtUp:
			break collect
		case it.Tombstone != nil:
			d.Tombstones = append(d.Tombstones, *it.Tombstone)
			toAck = append(toAck, it.Tombstone.MessageID)
		default:
			d.first = it.Envelope
			break collect
		}
	}
	if len(toAck) > 0 {
		if err := ss.Ack(ctx, toAck...); err != nil {
			s.log.Debug("mailbox: deliver: delete tombstones", "err", err)
		}
	}
	dctx, cancel := context.WithCancel(s.ctx)
	d.cancel = cancel
	// Counted under s.mu, as Close marks the service closed, so that Close waits for every delivery it lets start.
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		cancel()
		ss.Close()
		return nil, fmt.Errorf("mailbox: deliver: %w", ErrClosed)
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer close(d.done)
		d.err = d.run(dctx, p)
	}()
	return d, nil
}

func (ss *Session) nextOrCaughtUp(ctx context.Context) (Item, bool, error) {
	select {
	case it, ok := <-ss.out:
		if !ok {
			return Item{}, false, io.EOF
		}
		return it, false, nil
	case <-ss.caughtUp:
		return Item{}, true, nil
	case <-ctx.Done():
		return Item{}, false, ctx.Err()
	}
}

type inFlight struct {
	id  wire.MessageID
	out <-chan wire.Outcome
}

func (d *Delivery) run(ctx context.Context, p Pusher) error {
	defer d.ss.Close()
	window := make(chan inFlight, deliverWindow)
	errc := make(chan error, 1)
	// The acknowledger settles pushes in order and deletes what the client acknowledged.
	go func() {
		var err error
		for f := range window {
			var o wire.Outcome
			select {
			case o = <-f.out:
			case <-ctx.Done():
				err = ctx.Err()
			}
			if err != nil {
				continue // drain the window
			}
			if o.Status == wire.StatusDelivered {
				if aerr := d.ss.Ack(ctx, f.id); aerr != nil {
					err = aerr
				}
			} else {
				// Not acknowledged (connection gone, timeout): it stays in the mailbox for the next fetch, and
				// this delivery ends.
				err = fmt.Errorf("mailbox: deliver: %s %s", o.Status, o.Reason)
				d.cancel()
			}
		}
		errc <- err
	}()
	push := func(e *Envelope) {
		env := wire.Envelope{MessageID: e.MessageID, Sender: e.Sender, Recipient: e.Recipient, Ciphertext: e.Ciphertext}
		window <- inFlight{id: e.MessageID, out: p.Push(env)}
	}
	var err error
	if d.first != nil {
		push(d.first)
	}
	for err == nil {
		var it Item
		it, err = d.ss.Next(ctx)
		if err != nil {
			break
		}
		if it.Envelope != nil {
			select {
			case <-ctx.Done():
				err = ctx.Err()
			default:
				push(it.Envelope)
			}
		}
	}
	close(window)
	if aerr := <-errc; aerr != nil && !errors.Is(aerr, context.Canceled) {
		return aerr
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, ErrClosed) {
		return nil
	}
	return err
}

// Stop ends the delivery (the device disconnected) and waits for it. Envelopes pushed but not acknowledged stay
// in the mailbox. It returns why the delivery ended, if not because of Stop.
func (d *Delivery) Stop() error {
	d.cancel()
	<-d.done
	return d.err
}

// RequestDevice returns the device a signed fetch or delete request is for (from its body; the replicas check
// the signature).
func RequestDevice(r SignedRequest) (wire.DeviceID, error) {
	var raw map[uint64]any
	if err := cb.dec.Unmarshal(r.Body, &raw); err != nil {
		return wire.DeviceID{}, errorf(StatusMalformed, "request body: %v", err)
	}
	d, ok := raw[1].([]byte)
	if !ok || len(d) != wire.DeviceIDSize {
		return wire.DeviceID{}, errorf(StatusMalformed, "request body names no device")
	}
	return wire.DeviceID(d), nil
}

// Done is closed when the delivery has ended.
func (d *Delivery) Done() <-chan struct{} { return d.done }
