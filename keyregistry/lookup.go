package keyregistry

import (
	"context"
	"errors"
	"fmt"
	"time"

	kaddht "github.com/libp2p/go-libp2p-kad-dht"
	record "github.com/libp2p/go-libp2p-record"

	"github.com/iagon/gridchat/e2ee"
)

// fetch asks the grid for key: it waits for LookupQuorum answers from
// different peers (kad-dht keeps the best by the namespace's selector and
// drops every answer that does not validate), opens and checks the best
// answer again, and returns it. A lying peer's stale or altered record
// loses to any honest peer's newer one; the cache floor (adopt) then
// catches a grid that only serves stale records.
func (s *Service) fetch(ctx context.Context, key string) (*held, error) {
	ns, _, err := record.SplitKey(key)
	if err != nil {
		return nil, fmt.Errorf("%w: key %q", ErrMalformed, key)
	}
	v := s.vals[ns]
	if v == nil {
		return nil, fmt.Errorf("%w: namespace %q", ErrMalformed, ns)
	}
	return searchBest(ctx, s, key, v.open, func(best, h *held) bool {
		if ns == NSUsername && best.acct.ID != h.acct.ID {
			// Competing claims: the validator's order, so every node
			// answers the same winner.
			return claimBefore(h, best)
		}
		rel := relate(best, h)
		return rel == e2ee.Extends || (rel == e2ee.Same && betterSame(best, h))
	})
}

// searchBest asks the grid for key with the lookup quorum and keeps the best
// answer: every answer is opened (checked) again with open, and a later
// answer replaces the best so far only if supersedes(best, later). An answer
// that fails our checks, or one superseded by a later answer, shows that some
// peer served a bad or stale record, and is counted.
func searchBest[T any](ctx context.Context, s *Service, key string, open func(key string, value []byte) (*T, error), supersedes func(best, later *T) bool) (*T, error) {
	ctx, cancel := context.WithTimeout(ctx, s.lim.LookupTimeout)
	defer cancel()
	ch, err := s.cfg.Router.SearchValue(ctx, key, kaddht.Quorum(s.lim.LookupQuorum))
	if err != nil {
		return nil, fmt.Errorf("%w: search %s: %v", ErrUnavailable, key, err)
	}
	var best *T
	answers := 0
	for val := range ch {
		answers++
		h, err := open(key, val)
		if err != nil {
			// kad-dht validated it already; a failure here means our own
			// checks are stricter than the DHT's, so it counts as a lie.
			s.m.badAnswers.WithLabelValues("invalid").Inc()
			continue
		}
		if best != nil {
			if !supersedes(best, h) {
				continue
			}
			// An earlier, worse answer was superseded: some peer served a
			// stale record.
			s.m.badAnswers.WithLabelValues("superseded").Inc()
		}
		best = h
	}
	if best == nil {
		// A search that ran out of time without a single answer says nothing
		// about the record; one that finished did look everywhere.
		if err := ctx.Err(); err != nil && answers == 0 {
			return nil, fmt.Errorf("%w: search %s: %v", ErrUnavailable, key, err)
		}
		return nil, ErrNotFound
	}
	return best, nil
}

// adopt offers a verified record to the cache. The cache only moves
// forward: a record that extends the cached chain replaces it, the same
// chain refreshes it, and a rollback or fork is refused and counted. It
// returns the cached (best known) record. Gossip only refreshes accounts
// already cached (a node caches what its clients look up, not the whole
// directory); lookups and local updates insert. When the account is held by
// this node, the held copy moves forward too.
func (s *Service) adopt(h *held, source string) *held {
	insert := source != "gossip"
	id := h.acct.ID
	var out, prev *held
	var rel e2ee.Relation
	s.accounts.update(id, func(old *held, had bool) (*held, bool) {
		prev = old
		if !had {
			if !insert {
				return nil, false
			}
			out = h
			return h, true
		}
		rel = relate(old, h)
		switch rel {
		case e2ee.Extends:
			out = h
		case e2ee.Same:
			out = old
			if betterSame(old, h) {
				out = h
			}
		default:
			out = old
		}
		return out, true // also refreshes the entry's TTL
	})
	switch rel {
	case e2ee.RolledBack:
		s.m.staleRefused.WithLabelValues(source, "rollback").Inc()
	case e2ee.Forked:
		s.m.staleRefused.WithLabelValues(source, "fork").Inc()
		s.log.Warn("fork refused", "account", id.String(), "source", source, "fork_at", e2ee.ForkIndex(out.chain, h.chain))
	}
	if out == nil {
		// Not cached here; a held copy still moves forward.
		s.advanceHeld(h)
		s.notifyRevoked(nil, h)
		return h
	}
	if out == h {
		s.notifyRevoked(prev, h)
		for _, d := range h.acct.Devices {
			s.devices.update(d.ID, func(e2ee.AccountID, bool) (e2ee.AccountID, bool) { return id, true })
		}
		if h.acct.Username != "" {
			s.names.update(h.acct.Username, func(cur e2ee.AccountID, had bool) (e2ee.AccountID, bool) {
				// The name stays with a cached live claim that comes
				// first, so gossip or a lookup of the losing account
				// does not bring its claim back.
				if had && cur != id {
					if ch, ok := s.accounts.peek(cur); ok && ch.acct.Username == h.acct.Username &&
						s.ver.usernameLive(ch) && claimBefore(ch, h) {
						return cur, false
					}
				}
				return id, true
			})
		}
		if rel == e2ee.Extends {
			s.advanceHeld(h)
		}
	}
	return out
}

// notifyRevoked calls OnRevoked with every device h revokes that old (nil
// if unknown) did not.
func (s *Service) notifyRevoked(old, h *held) {
	if s.cfg.OnRevoked == nil || (old != nil && old.state.Seq == h.state.Seq) {
		return
	}
	for _, d := range h.acct.Devices {
		if !d.Revoked {
			continue
		}
		if old != nil {
			if od, ok := old.acct.Device(d.ID); ok && od.Revoked {
				continue
			}
		}
		s.cfg.OnRevoked(d.ID)
	}
}

// latest returns the newest record of an account the grid and this node
// know, asking the grid (not the cache) first.
func (s *Service) latest(ctx context.Context, id e2ee.AccountID) (*held, error) {
	h, err := s.fetch(ctx, AccountKey(id))
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			if old, ok := s.accounts.peek(id); ok {
				return old, nil
			}
		}
		return nil, err
	}
	return s.adopt(h, "dht"), nil
}

// account returns the account from the cache, or from the grid.
func (s *Service) account(ctx context.Context, id e2ee.AccountID) (*held, error) {
	if h, ok := s.accounts.get(id); ok {
		s.m.lookups.WithLabelValues("cache").Inc()
		return h, nil
	}
	s.m.lookups.WithLabelValues("dht").Inc()
	return s.latest(ctx, id)
}

// LookupAccount returns the verified account id.
func (s *Service) LookupAccount(ctx context.Context, id e2ee.AccountID) (*Account, error) {
	h, err := s.account(ctx, id)
	if err != nil {
		return nil, opErr("lookup account", id.String(), err)
	}
	return h.acct, nil
}

// LookupDevice returns the verified account that holds device id, and the
// device (which may be revoked). On a cache miss the device index only names
// the account: the account's own latest record is fetched too, so a stale
// index record cannot hide a revocation.
func (s *Service) LookupDevice(ctx context.Context, id e2ee.DeviceID) (*Account, Device, error) {
	const op = "lookup device"
	var h *held
	if aid, ok := s.devices.get(id); ok {
		h, _ = s.accounts.get(aid)
	}
	if h == nil {
		s.m.lookups.WithLabelValues("dht").Inc()
		got, err := s.fetch(ctx, DeviceKey(id))
		if err != nil {
			return nil, Device{}, opErr(op, id.String(), err)
		}
		s.adopt(got, "dht")
		if h, err = s.latest(ctx, got.acct.ID); err != nil {
			return nil, Device{}, opErr(op, id.String(), err)
		}
	} else {
		s.m.lookups.WithLabelValues("cache").Inc()
	}
	d, ok := h.acct.Device(id)
	if !ok {
		return nil, Device{}, opErr(op, id.String(), ErrNotFound)
	}
	return h.acct, d, nil
}

// LookupUsername returns the verified account whose live claim holds name
// (normalized first): of competing claims of different accounts, the one
// that comes first in the grid's order (docs/PROTOCOL.md §5, "Competing
// claims"). A name the account has since left, or whose claim lapsed, is
// not found: on a cache miss the account's own latest record is fetched
// after the name record, so a stale name record cannot keep a name the
// account gave up.
func (s *Service) LookupUsername(ctx context.Context, name string) (*Account, error) {
	const op = "lookup username"
	n, err := NormalizeUsername(name)
	if err != nil {
		return nil, opErr(op, "", err)
	}
	h, err := s.lookupName(ctx, n)
	if err != nil {
		return nil, opErr(op, n, err)
	}
	return h.acct, nil
}

// lookupName is LookupUsername for a normalized name.
func (s *Service) lookupName(ctx context.Context, n string) (*held, error) {
	var h *held
	if aid, ok := s.names.get(n); ok {
		h, _ = s.accounts.get(aid)
	}
	if h == nil {
		s.m.lookups.WithLabelValues("dht").Inc()
		got, err := s.fetch(ctx, UsernameKey(n))
		if err != nil {
			return nil, err
		}
		s.adopt(got, "dht")
		if h, err = s.latest(ctx, got.acct.ID); err != nil {
			return nil, err
		}
	} else {
		s.m.lookups.WithLabelValues("cache").Inc()
	}
	if h.acct.Username != n || !s.ver.usernameLive(h) {
		return nil, ErrNotFound
	}
	return h, nil
}

// UsernameOf returns account id if it holds name: its chain's current name
// is name, its claim is live, and no other account's claim comes first.
// An account whose live claim lost to another account's earlier one gets
// ErrUsernameLost naming the holder; one whose claim lapsed,
// ErrUsernameLapsed; one whose chain does not name it, ErrNotFound. A
// client checks its own name with it (directory.username with "account").
func (s *Service) UsernameOf(ctx context.Context, name string, id e2ee.AccountID) (*Account, error) {
	const op = "lookup username"
	n, err := NormalizeUsername(name)
	if err != nil {
		return nil, opErr(op, "", err)
	}
	own, err := s.latest(ctx, id)
	if err != nil {
		return nil, opErr(op, n, err)
	}
	switch {
	case own.acct.Username != n:
		return nil, opErr(op, n, fmt.Errorf("%w: account %s is not named %q", ErrNotFound, id, n))
	case !s.ver.usernameLive(own):
		return nil, opErr(op, n, fmt.Errorf("%w: claimed at %s", ErrUsernameLapsed, own.acct.UsernameAt.Format(time.RFC3339)))
	}
	holder, err := s.lookupName(ctx, n)
	switch {
	case errors.Is(err, ErrNotFound) || err == nil && holder.acct.ID == id:
		// Its claim is the only live one the grid shows.
		return own.acct, nil
	case err != nil:
		return nil, opErr(op, n, err)
	case claimBefore(own, holder):
		// The grid has not converged yet where this node looked; the order
		// gives the name to id.
		return own.acct, nil
	}
	return nil, opErr(op, n, fmt.Errorf("%w: account %s holds %q by an earlier claim", ErrUsernameLost, holder.acct.ID, n))
}

// DeviceAuth is what a gateway needs to authenticate a device connection.
type DeviceAuth struct {
	Account e2ee.AccountID
	Public  e2ee.DevicePublic
	Revoked bool
}

// AuthDevice returns the keys, account and revocation state of device id,
// for the gateway's connection authentication.
func (s *Service) AuthDevice(ctx context.Context, id e2ee.DeviceID) (DeviceAuth, error) {
	a, d, err := s.LookupDevice(ctx, id)
	if err != nil {
		return DeviceAuth{}, err
	}
	return DeviceAuth{Account: a.ID, Public: d.Public, Revoked: d.Revoked}, nil
}

// Forget drops every cached entry (tests use it for a cache-cold restart).
func (s *Service) Forget() {
	s.accounts.purge()
	s.devices.purge()
	s.names.purge()
}
