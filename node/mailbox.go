package node

import (
	"fmt"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/namespace"

	"github.com/iagon/gridchat/relay/mailbox"
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
		Host:         n.host,
		Router:       n.dht,
		Datastore:    namespace.Wrap(n.store, ds.NewKey(mailboxNamespace)),
		Limits:       m.Limits,
		Clock:        m.Clock,
		Metrics:      n.reg,
		Logger:       n.log.With("part", "mailbox"),
		DisableLoops: m.DisableLoops,
	})
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.mbox = mb
	return nil
}

// Mailbox returns the node's mailbox service.
func (n *Node) Mailbox() *mailbox.Service { return n.mbox }
