package keyregistry

import (
	"testing"
	"time"
)

func TestLRUEvictsLeastRecentAndExpires(t *testing.T) {
	clk := newTestClock()
	c := newLRU[string, int](2, time.Minute, clk.now)
	set := func(k string, v int) { c.update(k, func(int, bool) (int, bool) { return v, true }) }
	set("a", 1)
	set("b", 2)
	if v, ok := c.get("a"); !ok || v != 1 {
		t.Fatalf("get a = %d, %v", v, ok)
	}
	set("c", 3) // evicts b, the least recently used
	if _, ok := c.get("b"); ok {
		t.Fatal("b not evicted")
	}
	clk.advance(time.Minute)
	if _, ok := c.get("a"); ok {
		t.Fatal("a not expired")
	}
	if v, ok := c.peek("a"); !ok || v != 1 {
		t.Fatalf("expired a is gone: %d, %v", v, ok)
	}
	if v, ok := c.peek("c"); !ok || v != 3 {
		t.Fatalf("peek of expired c = %d, %v", v, ok)
	}
	// An update that refuses leaves the entry alone.
	if c.update("c", func(old int, had bool) (int, bool) { return 0, false }) {
		t.Fatal("refused update reported as applied")
	}
	if v, _ := c.peek("c"); v != 3 {
		t.Fatalf("refused update changed value to %d", v)
	}
	c.purge()
	if c.len() != 0 {
		t.Fatal("purge left entries")
	}
}
