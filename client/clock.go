package client

import (
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"
)

// MaxClockOffset is the largest difference between this device's clock (Config.Now) and a gateway's that the
// client corrects. A gateway further off than that is refused with ErrClockOffset: either the device's clock
// or the gateway's is badly wrong, and signing at the gateway's time would only hide it.
const MaxClockOffset = 24 * time.Hour

// ErrClockOffset means a gateway's clock (its hello) differs from this device's by more than MaxClockOffset.
// The connection is refused; the user should set the device's clock (or use another gateway).
var ErrClockOffset = errors.New("client: device clock too far from the gateway's")

// keyClockOffset (bucketSelf) holds the last offset adopted, in milliseconds (decimal), so a client that
// starts offline still signs at the grid's time.
const keyClockOffset = "clock-offset"

// gridClock is the device's clock corrected to the grid's: base (Config.Now) plus the offset estimated from
// the last gateway hello. Every time the client signs or checks against the grid's time (auth proofs,
// registration, statements, messaging keys, presence records, signed requests) is read from it, and so are
// message times, causal counters and the engine's bookkeeping; only the account cache ages its entries by base.
type gridClock struct {
	base   func() time.Time
	offset atomic.Int64 // nanoseconds added to base
}

func newGridClock(base func() time.Time, offset time.Duration) *gridClock {
	g := &gridClock{base: base}
	g.offset.Store(int64(offset))
	return g
}

// now returns the grid's time as this device estimates it.
func (g *gridClock) now() time.Time { return g.base().Add(g.Offset()) }

// Offset returns the correction in use.
func (g *gridClock) Offset() time.Duration { return time.Duration(g.offset.Load()) }

// observe adopts the offset cn's hello shows, and reports whether it changed by a second or more (worth
// storing). A hello without a time (an older gateway) leaves the offset as it was. An offset beyond
// MaxClockOffset is refused with ErrClockOffset and leaves the offset as it was.
func (g *gridClock) observe(cn *conn) (bool, error) {
	off, ok := helloOffset(cn.hello.TimeMS, g.base(), time.Since(cn.helloAt), cn.helloRTT)
	if !ok {
		return false, nil
	}
	if off > MaxClockOffset || off < -MaxClockOffset {
		return false, fmt.Errorf("%w: %s: gateway time is %v from this device's (at most %v is corrected)",
			ErrClockOffset, cn.url, off.Round(time.Second), MaxClockOffset)
	}
	old := time.Duration(g.offset.Swap(int64(off)))
	return (off - old).Abs() >= time.Second, nil
}

// helloOffset estimates the grid's time minus the device's from a hello that said serverMS (unix ms), given
// the device's clock now, how long ago the hello arrived (age) and rtt, the time from opening the connection to
// the hello's arrival. The gateway took its time within rtt before the arrival; taking it half way bounds the
// error by rtt/2. ok is false for a hello without a time.
func helloOffset(serverMS int64, now time.Time, age, rtt time.Duration) (off time.Duration, ok bool) {
	if serverMS <= 0 {
		return 0, false
	}
	local := now.Add(-age).Add(-rtt / 2)
	return time.UnixMilli(serverMS).Sub(local), true
}

// parseClockOffset reads a stored keyClockOffset value; anything unreadable or out of bounds is no offset.
func parseClockOffset(b []byte) time.Duration {
	ms, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return 0
	}
	off := time.Duration(ms) * time.Millisecond
	if off > MaxClockOffset || off < -MaxClockOffset {
		return 0
	}
	return off
}

// formatClockOffset is the stored form of off.
func formatClockOffset(off time.Duration) []byte {
	return strconv.AppendInt(nil, off.Milliseconds(), 10)
}

// adoptClock corrects the client's clock by cn's hello and stores the offset when it changed.
func (c *Client) adoptClock(cn *conn) error {
	changed, err := c.clock.observe(cn)
	if err != nil {
		return err
	}
	if changed {
		if err := c.st.Put(bucketSelf, keyClockOffset, formatClockOffset(c.clock.Offset())); err != nil {
			c.log.Warn("storing the clock offset failed", "err", err)
		}
	}
	return nil
}
