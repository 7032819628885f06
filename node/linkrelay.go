package node

import (
	"fmt"
	"time"

	"github.com/iagon/gridchat/linkrelay"
)

// LinkRelaySettings configures the node's device-link rendezvous (docs/PROTOCOL.md §9.6).
type LinkRelaySettings struct {
	// Limits are the rendezvous' expiry, frame caps and open rate; zero fields take linkrelay.DefaultLimits.
	Limits linkrelay.Limits
	// Clock, when set, replaces time.Now for expiry and the open rate (tests).
	Clock func() time.Time
}

// startLinkRelay serves link.open and link.send on the node's WebSocket API.
func (n *Node) startLinkRelay() error {
	lr, err := linkrelay.New(linkrelay.Config{
		Limits:  n.cfg.LinkRelay.Limits,
		Clock:   n.cfg.LinkRelay.Clock,
		Metrics: n.reg,
		Logger:  n.log.With("part", "linkrelay"),
	})
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.links = lr
	if err := lr.Register(n.deliv.hub); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	return nil
}

// LinkRelay returns the node's device-link rendezvous.
func (n *Node) LinkRelay() *linkrelay.Service { return n.links }
