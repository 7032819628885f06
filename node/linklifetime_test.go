package node_test

import (
	"errors"
	"testing"
	"time"

	"github.com/iagon/gridchat/linkrelay"
	"github.com/iagon/gridchat/wire"
)

// MaxLifetime: a paired rendezvous that is never idle still ends MaxLifetime after it opened.
func TestLinkRendezvousEndsAtItsMaxLifetimeHoweverBusy(t *testing.T) {
	clk := &testClock{now: time.Now()}
	const lifetime = 3 * time.Minute
	nd, host := linkNode(t, clk, linkrelay.Limits{MaxLifetime: lifetime})
	ctx := deliveryCtx(t)
	rv := []byte("BUSY-RENDEZVOUS!")
	joiner := pairRendezvous(t, ctx, nd, host, rv)
	// A frame every minute keeps it from ever being idle for the TTL...
	for elapsed := time.Duration(0); elapsed < lifetime-time.Minute; elapsed += time.Minute {
		clk.Advance(time.Minute)
		if err := linkSend(ctx, joiner, rv, []byte("busy")); err != nil {
			t.Fatalf("send %v after opening: %v", elapsed+time.Minute, err)
		}
		nextFrame(t, host, rv)
	}
	// ...but at its lifetime it ends anyway.
	clk.Advance(time.Minute + time.Second)
	if err := linkSend(ctx, joiner, rv, []byte("too late")); !errors.Is(err, wire.ErrNotFound) {
		t.Fatalf("send after the lifetime: %v, want not_found", err)
	}
	waitRendezvous(t, nd, 0)
}
