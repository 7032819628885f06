package mailbox

import (
	"sync"
	"time"

	"github.com/iagon/gridchat/wire"
)

// replayCache remembers the (device, nonce) pairs of signed requests until they fall out of the freshness
// window, so a captured request cannot be used twice on this replica. It is bounded: when it is full of
// unexpired entries, new requests are refused (busy) rather than letting an old nonce be forgotten early.
type replayCache struct {
	mu   sync.Mutex
	max  int
	seen map[replayKey]time.Time // → when the entry may be forgotten
}

type replayKey struct {
	dev   wire.DeviceID
	nonce [16]byte
}

func newReplayCache(max int) *replayCache {
	return &replayCache{max: max, seen: make(map[replayKey]time.Time)}
}

// check records the nonce, or refuses it as a replay (ErrReplay) or for lack of room (ErrBusy).
func (c *replayCache) check(dev wire.DeviceID, nonce [16]byte, forgetAt, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := replayKey{dev, nonce}
	if _, ok := c.seen[k]; ok {
		return errorf(StatusReplay, "request nonce already used")
	}
	if len(c.seen) >= c.max {
		for key, t := range c.seen {
			if !t.After(now) {
				delete(c.seen, key)
			}
		}
		if len(c.seen) >= c.max {
			return errorf(StatusBusy, "replay cache full")
		}
	}
	c.seen[k] = forgetAt
	return nil
}
