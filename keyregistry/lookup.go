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

// fetch asks the grid for an account or device key (searchName asks for a
// name's): it waits for LookupQuorum answers from
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
	if v == nil || ns == NSUsername {
		return nil, fmt.Errorf("%w: namespace %q for fetch", ErrMalformed, ns)
	}
	return searchBest(ctx, s, key, v.open, func(best, h *held) bool {
		rel := relate(best, h)
		return rel == e2ee.Extends || (rel == e2ee.Same && betterSame(best, h))
	})
}

// searchName is fetch for a name's key. It also reports whether an answer
// was a claim superseded by its own account's release: kad-dht hands on
// only the answers that beat the best so far, and such a stale claim, while
// it was the best, can have hidden another account's live claim (which
// comes after the stale claim and before the release). kad-dht's lookup
// correction stores the release where the stale claim was, so asking again
// finds the hidden claim.
func (s *Service) searchName(ctx context.Context, n string) (best *held, stale bool, err error) {
	best, err = searchBest(ctx, s, UsernameKey(n), s.vals[NSUsername].open, func(best, h *held) bool {
		if best.acct.ID != h.acct.ID {
			// Competing claims and releases: the validator's order, so
			// every node answers the same winner.
			return compareHolders(h, h.acct.Username == n, best, best.acct.Username == n) < 0
		}
		rel := relate(best, h)
		sup := rel == e2ee.Extends || (rel == e2ee.Same && betterSame(best, h))
		if sup && best.acct.Username == n && h.acct.Username != n {
			stale = true
		}
		return sup
	})
	return best, stale, err
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

// lookupName is LookupUsername for a normalized name. A cached holder that
// no longer holds the name (it renamed, or its claim lapsed) sends the
// lookup to the grid, where another account may hold the name now.
func (s *Service) lookupName(ctx context.Context, n string) (*held, error) {
	if aid, ok := s.names.get(n); ok {
		if h, ok := s.accounts.get(aid); ok && h.acct.Username == n && s.ver.usernameLive(h) {
			s.m.lookups.WithLabelValues("cache").Inc()
			return h, nil
		}
	}
	s.m.lookups.WithLabelValues("dht").Inc()
	return s.nameHolder(ctx, n, nil)
}

// releaseRounds bounds how often nameHolder asks the grid again in one
// lookup because a stale claim was served.
const releaseRounds = 2

// nameHolder returns the account whose live claim holds n as the grid
// shows it, or ErrNotFound. The best record under n's key is a live claim
// or a release; releases order after every claim, so a release means that
// no live claim was found, unless a stale claim hid one (searchName: then
// it asks again). A claim is checked against its account's own latest
// record, unless settled accepts it as it is: a stale claim record of an
// account that has left n since does not hold it. Its account's latest
// record is then its release of n, which supersedes the stale claim
// wherever it is stored: nameHolder stores it under n and asks again, so
// the claim a stale record hid is found. It asks at most releaseRounds
// times more.
func (s *Service) nameHolder(ctx context.Context, n string, settled func(*held) bool) (*held, error) {
	for round := 0; ; round++ {
		got, stale, err := s.searchName(ctx, n)
		if err != nil {
			return nil, err
		}
		s.adopt(got, "dht")
		if got.acct.Username != n {
			if stale && round < releaseRounds {
				continue
			}
			return nil, ErrNotFound
		}
		if settled != nil && settled(got) {
			return got, nil
		}
		h, err := s.latest(ctx, got.acct.ID)
		if err != nil {
			return nil, err
		}
		if h.acct.Username == n && s.ver.usernameLive(h) {
			return h, nil
		}
		if round == releaseRounds || !s.storeRelease(ctx, h, n) {
			return nil, ErrNotFound
		}
		s.m.badAnswers.WithLabelValues("released").Inc()
	}
}

// storeRelease stores h under n's key if it is a valid release of n there,
// and reports whether it is.
func (s *Service) storeRelease(ctx context.Context, h *held, n string) bool {
	key := UsernameKey(n)
	if _, err := s.vals[NSUsername].open(key, h.raw); err != nil || h.acct.Username == n {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, s.lim.PutTimeout)
	defer cancel()
	if err := s.cfg.Router.PutValue(ctx, key, h.raw); err != nil {
		// A peer (or this node) holding another account's live claim
		// refuses the release, as it should.
		s.log.Debug("store username release", "name", n, "account", h.acct.ID.String(), "err", err)
	}
	return true
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
