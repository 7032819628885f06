package client

import (
	"bytes"
	"cmp"
	"time"
)

// A conversation's order (docs/PROTOCOL.md §9.3). Each device keeps, in its conversation record, the largest
// counter it has sent or seen there; the counters of numbered payloads it sends follow it, and the list sorts
// by them. The constants are in payload.go.

// orderOf is a message's first sort key: its counter, or for a payload without one (from a client that
// predates counters) its sent time in Unix milliseconds, within [0, MaxClock].
func orderOf(clock uint64, sentMS int64) uint64 {
	if clock != 0 {
		return clock
	}
	return uint64(min(max(sentMS, 0), MaxClock))
}

// tick returns the counter of this device's next numbered payload in the conversation and records it as sent:
// now (the engine's clock, corrected to the grid's) in Unix milliseconds, or 1 + the largest counter it has
// sent or seen there if that is larger.
func (r *convRecord) tick(now time.Time) uint64 {
	c := max(r.Clock+1, orderOf(0, now.UnixMilli()))
	r.Clock = c
	return c
}

// witness records a counter seen in a received or imported message: it raises the conversation's clock to
// it, but never past now + MaxClockLead.
func (r *convRecord) witness(counter uint64, now time.Time) {
	r.Clock = max(r.Clock, min(counter, orderOf(0, now.Add(MaxClockLead).UnixMilli())))
}

// CompareMessages orders two messages of one conversation as Messages lists them: by counter (for a message
// without one, its sent time in milliseconds), then sent time, then sender device, then number. It is the
// same total order on every device, and a message sorts after every message its sender had received before
// sending it (unless one of those was more than MaxClockLead ahead of the sender's clock). An application that
// adds the messages of MessageEvents to a list it shows keeps that list in this order.
func CompareMessages(a, b Message) int {
	if c := cmp.Compare(orderOf(a.Clock, a.Sent.UnixMilli()), orderOf(b.Clock, b.Sent.UnixMilli())); c != 0 {
		return c
	}
	if c := a.Sent.Compare(b.Sent); c != 0 {
		return c
	}
	if c := bytes.Compare(a.SenderDevice[:], b.SenderDevice[:]); c != 0 {
		return c
	}
	return cmp.Compare(a.Seq, b.Seq)
}
