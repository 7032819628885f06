package gateway

import (
	"fmt"

	"github.com/iagon/gridchat/wire"
)

// Pusher sends pushes to one client connection. A service that must reach a connection later than the call
// that named it (the device-link rendezvous forwards one side's frames to the other) keeps the Pusher of that
// call; it stays valid for as long as the connection lives (see Hub.OnConnClosed).
type Pusher struct {
	c *conn
}

// Pusher returns the Pusher of the call's connection.
func (c *Call) Pusher() Pusher { return Pusher{c: c.conn} }

// Push encodes body and queues it as push name on the connection without blocking. It fails when the
// connection is closing or gone, or when its send queue overflowed (the connection is then closed as a slow
// consumer, as for any push).
func (p Pusher) Push(name string, body any) error {
	if p.c == nil {
		return fmt.Errorf("gateway: push %s: no connection", name)
	}
	frame, err := wire.EncodePush(name, body)
	if err != nil {
		return fmt.Errorf("gateway: push %s: %w", name, err)
	}
	if !p.c.enqueue(frame) {
		return fmt.Errorf("gateway: push %s: %w", name, wire.Errorf(wire.CodeUnavailable, "the connection is closed"))
	}
	return nil
}
