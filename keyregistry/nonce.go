package keyregistry

import (
	"crypto/rand"
	"fmt"
	"sync"
	"time"
)

// NonceSize is the length of a registration nonce in bytes.
const NonceSize = 32

// Nonce is a single-use registration challenge bound to one connection.
type Nonce [NonceSize]byte

// nonceEntry is what the store remembers about an issued nonce. Used and
// expired nonces are kept (as tombstones) for a while so a second use is
// reported as a replay rather than as an unknown nonce.
type nonceEntry struct {
	conn    string
	grant   any // what the issuer attached (the registration's key challenge)
	issued  time.Time
	expires time.Time
	used    bool
}

// nonceStore issues and consumes nonces. It is safe for concurrent use.
type nonceStore struct {
	mu      sync.Mutex
	now     func() time.Time
	ttl     time.Duration // how long a nonce is valid
	keep    time.Duration // how long a tombstone is kept after expiry
	max     int           // total entries, live and tombstones
	perConn int           // live nonces per connection
	entries map[Nonce]*nonceEntry
	byConn  map[string][]Nonce // live nonces per connection, oldest first
}

func newNonceStore(now func() time.Time, ttl time.Duration, max, perConn int) *nonceStore {
	return &nonceStore{
		now: now, ttl: ttl, keep: 10 * ttl, max: max, perConn: perConn,
		entries: make(map[Nonce]*nonceEntry),
		byConn:  make(map[string][]Nonce),
	}
}

// issue returns a fresh nonce bound to conn and its expiry.
func (s *nonceStore) issue(conn string, grant any) (Nonce, time.Time, error) {
	var n Nonce
	if _, err := rand.Read(n[:]); err != nil {
		return n, time.Time{}, fmt.Errorf("nonce: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if len(s.entries) >= s.max {
		s.sweepLocked(now)
		if len(s.entries) >= s.max {
			return Nonce{}, time.Time{}, fmt.Errorf("nonce: %w: %d outstanding", ErrUnavailable, len(s.entries))
		}
	}
	live := s.byConn[conn]
	if len(live) >= s.perConn {
		// The connection asked for more than it can use: forget its oldest.
		delete(s.entries, live[0])
		live = live[1:]
	}
	e := &nonceEntry{conn: conn, grant: grant, issued: now, expires: now.Add(s.ttl)}
	s.entries[n] = e
	s.byConn[conn] = append(live, n)
	return n, e.expires, nil
}

// consume checks that n was issued to conn, is unexpired and unused, marks
// it used, and returns what was attached to it. Whatever the outcome, a nonce presented once can never succeed
// later except when it was refused only because it came from another
// connection (the rightful connection may still use it).
func (s *nonceStore) consume(conn string, n Nonce) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	found := s.entries[n]
	if found == nil {
		return nil, ErrNonceUnknown
	}
	if found.conn != conn {
		return nil, ErrNonceOtherConn
	}
	if found.used {
		return nil, ErrNonceReplayed
	}
	found.used = true
	grant := found.grant
	found.grant = nil
	s.dropLiveLocked(conn, n)
	if !now.Before(found.expires) {
		return nil, ErrNonceExpired
	}
	return grant, nil
}

// dropConn forgets the live nonces of a closed connection; tombstones stay.
func (s *nonceStore) dropConn(conn string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.byConn[conn] {
		if e := s.entries[n]; e != nil {
			e.used = true
		}
	}
	delete(s.byConn, conn)
}

func (s *nonceStore) dropLiveLocked(conn string, n Nonce) {
	live := s.byConn[conn]
	for i, m := range live {
		if m == n {
			live = append(live[:i], live[i+1:]...)
			break
		}
	}
	if len(live) == 0 {
		delete(s.byConn, conn)
	} else {
		s.byConn[conn] = live
	}
}

func (s *nonceStore) sweepLocked(now time.Time) {
	for n, e := range s.entries {
		if now.After(e.expires.Add(s.keep)) {
			delete(s.entries, n)
			s.dropLiveLocked(e.conn, n)
		}
	}
}

// len returns how many nonces (live and tombstones) are remembered.
func (s *nonceStore) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}
