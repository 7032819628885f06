package keyregistry

import (
	"container/list"
	"sync"
	"time"
)

// lru is a bounded least-recently-used cache whose entries also expire after
// a time to live. It is safe for concurrent use.
type lru[K comparable, V any] struct {
	mu    sync.Mutex
	max   int
	ttl   time.Duration
	now   func() time.Time
	order *list.List // front = most recently used; elements hold *lruEntry
	items map[K]*list.Element
}

type lruEntry[K comparable, V any] struct {
	key     K
	val     V
	expires time.Time
}

func newLRU[K comparable, V any](max int, ttl time.Duration, now func() time.Time) *lru[K, V] {
	return &lru[K, V]{max: max, ttl: ttl, now: now, order: list.New(), items: make(map[K]*list.Element)}
}

// get returns the live value under k. An expired entry is a miss but stays
// (until evicted) so peek and update still see it: the directory keeps the
// newest chain it verified as a floor against rollbacks.
func (c *lru[K, V]) get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var zero V
	el, ok := c.items[k]
	if !ok {
		return zero, false
	}
	e := el.Value.(*lruEntry[K, V])
	if !c.now().Before(e.expires) {
		return zero, false
	}
	c.order.MoveToFront(el)
	return e.val, true
}

// peek returns the value under k even if it has expired, without refreshing
// its place; ok is false if k is absent.
func (c *lru[K, V]) peek(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[k]
	if !ok {
		var zero V
		return zero, false
	}
	return el.Value.(*lruEntry[K, V]).val, true
}

// update sets k to the value f returns given the present value (live or
// expired) and whether there is one. If f returns false the cache is left as
// it was. The decision and the write happen under one lock, so concurrent
// updates cannot interleave (a rollback can never overwrite a newer value).
func (c *lru[K, V]) update(k K, f func(old V, had bool) (V, bool)) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	var old V
	el, had := c.items[k]
	if had {
		old = el.Value.(*lruEntry[K, V]).val
	}
	nv, ok := f(old, had)
	if !ok {
		return false
	}
	exp := c.now().Add(c.ttl)
	if had {
		e := el.Value.(*lruEntry[K, V])
		e.val, e.expires = nv, exp
		c.order.MoveToFront(el)
		return true
	}
	c.items[k] = c.order.PushFront(&lruEntry[K, V]{key: k, val: nv, expires: exp})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*lruEntry[K, V]).key)
	}
	return true
}

// remove drops k.
func (c *lru[K, V]) remove(k K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		c.order.Remove(el)
		delete(c.items, k)
	}
}

// len returns the number of entries, live or expired.
func (c *lru[K, V]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

// purge drops every entry.
func (c *lru[K, V]) purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.order.Init()
	clear(c.items)
}
