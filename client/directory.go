package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/iagon/gridchat/client/store"
	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/e2ee/safety"
)

// Directory errors.
var (
	// ErrNotFound means the directory has no such account, device or username.
	ErrNotFound = errors.New("client: not found in the directory")
	// ErrForked means the directory served a chain that contradicts one this client verified earlier: someone
	// is lying about the account. The client keeps the chain it had.
	ErrForked = errors.New("client: account chain forked")
	// ErrRevokedDevice means a device has been revoked from its account.
	ErrRevokedDevice = errors.New("client: device revoked")
)

// directory reads the key directory. Each method returns the account's sigchain encoding; the client replays
// it itself and trusts nothing else the directory says.
type directory interface {
	accountChain(ctx context.Context, id e2ee.AccountID) ([]byte, error)
	deviceChain(ctx context.Context, id e2ee.DeviceID) ([]byte, error)
	usernameChain(ctx context.Context, name string) ([]byte, error)
}

// accounts is the client's verified view of other accounts: chains fetched from the directory, replayed,
// compared with the last verified chain (a rollback is ignored, a fork refused), and kept in the store. It
// reports device-set changes so the client can warn that safety numbers changed.
type accounts struct {
	mu       sync.Mutex
	dir      directory
	st       *store.Store
	now      func() time.Time
	ttl      time.Duration
	cache    map[e2ee.AccountID]cachedAccount
	byDevice map[e2ee.DeviceID]e2ee.AccountID
	onChange func(old, cur *e2ee.AccountState)
}

type cachedAccount struct {
	state   *e2ee.AccountState
	fetched time.Time
}

func newAccounts(dir directory, st *store.Store, now func() time.Time, ttl time.Duration) *accounts {
	return &accounts{dir: dir, st: st, now: now, ttl: ttl, cache: map[e2ee.AccountID]cachedAccount{}, byDevice: map[e2ee.DeviceID]e2ee.AccountID{}}
}

// stored returns the last verified state of id from the store, without asking the directory.
func (a *accounts) stored(id e2ee.AccountID) (*e2ee.AccountState, *e2ee.Chain) {
	b, ok := a.st.Get(bucketChains, id.String())
	if !ok {
		return nil, nil
	}
	c, err := e2ee.DecodeChain(b)
	if err != nil {
		return nil, nil
	}
	s, err := e2ee.Replay(c)
	if err != nil {
		return nil, nil
	}
	return s, c
}

// adopt verifies chain bytes fetched for an account and merges them with what the client knew.
func (a *accounts) adopt(raw []byte, want *e2ee.AccountID) (*e2ee.AccountState, error) {
	c, err := e2ee.DecodeChain(raw)
	if err != nil {
		return nil, fmt.Errorf("client: directory served a bad chain: %w", err)
	}
	st, err := e2ee.Replay(c)
	if err != nil {
		return nil, fmt.Errorf("client: directory served a chain that does not verify: %w", err)
	}
	if want != nil && st.Account != *want {
		return nil, fmt.Errorf("client: directory served account %s for %s", st.Account, *want)
	}
	old, oldChain := a.stored(st.Account)
	if oldChain != nil {
		switch e2ee.Compare(oldChain, c) {
		case e2ee.RolledBack, e2ee.Same:
			st = old
		case e2ee.Forked:
			return nil, fmt.Errorf("%w: account %s at statement %d", ErrForked, st.Account, e2ee.ForkIndex(oldChain, c))
		case e2ee.Extends:
			if err := a.st.Put(bucketChains, st.Account.String(), raw); err != nil {
				return nil, err
			}
		}
	} else if err := a.st.Put(bucketChains, st.Account.String(), raw); err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.cache[st.Account] = cachedAccount{state: st, fetched: a.now()}
	for _, d := range st.Devices {
		a.byDevice[d.ID] = st.Account
	}
	for _, d := range st.Revoked {
		a.byDevice[d.ID] = st.Account
	}
	onChange := a.onChange
	a.mu.Unlock()
	if old != nil && onChange != nil && !sameDevices(old, st) {
		onChange(old, st)
	}
	return st, nil
}

func sameDevices(a, b *e2ee.AccountState) bool {
	return slices.EqualFunc(a.Devices, b.Devices, func(x, y e2ee.DeviceState) bool { return x.ID == y.ID })
}

func notFound(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrNotFound) {
		return err
	}
	return err
}

// get returns the verified state of account id, from the cache if fresh (and !refresh).
func (a *accounts) get(ctx context.Context, id e2ee.AccountID, refresh bool) (*e2ee.AccountState, error) {
	a.mu.Lock()
	c, ok := a.cache[id]
	a.mu.Unlock()
	if ok && !refresh && a.now().Sub(c.fetched) < a.ttl {
		return c.state, nil
	}
	raw, err := a.dir.accountChain(ctx, id)
	if err != nil {
		if ok { // the directory is unreachable: the last verified state is still the best knowledge
			return c.state, nil
		}
		if s, _ := a.stored(id); s != nil && !errors.Is(err, ErrNotFound) {
			return s, nil
		}
		return nil, fmt.Errorf("client: look up account %s: %w", id, notFound(err))
	}
	return a.adopt(raw, &id)
}

// ofDevice returns the verified state of the account that holds device id, and the device's keys if it is
// current. It refreshes once when the device is not a current device of the cached state.
func (a *accounts) ofDevice(ctx context.Context, id e2ee.DeviceID) (*e2ee.AccountState, e2ee.DevicePublic, error) {
	a.mu.Lock()
	acct, ok := a.byDevice[id]
	a.mu.Unlock()
	if ok {
		if st, err := a.get(ctx, acct, false); err == nil {
			if pub, err := st.SenderKey(id); err == nil {
				return st, pub, nil
			}
		}
		if st, err := a.get(ctx, acct, true); err == nil {
			pub, err := st.SenderKey(id)
			if err != nil {
				return st, e2ee.DevicePublic{}, fmt.Errorf("%w: %v", ErrRevokedDevice, err)
			}
			return st, pub, nil
		}
	}
	raw, err := a.dir.deviceChain(ctx, id)
	if err != nil {
		return nil, e2ee.DevicePublic{}, fmt.Errorf("client: look up device %s: %w", id, err)
	}
	st, err := a.adopt(raw, nil)
	if err != nil {
		return nil, e2ee.DevicePublic{}, err
	}
	pub, err := st.SenderKey(id)
	if err != nil {
		return st, e2ee.DevicePublic{}, fmt.Errorf("%w: %v", ErrRevokedDevice, err)
	}
	return st, pub, nil
}

// byUsername returns the verified state of the account holding name; the chain must itself claim the name.
func (a *accounts) byUsername(ctx context.Context, name string) (*e2ee.AccountState, error) {
	raw, err := a.dir.usernameChain(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("client: look up username %q: %w", name, err)
	}
	st, err := a.adopt(raw, nil)
	if err != nil {
		return nil, err
	}
	if st.Username != name {
		return nil, fmt.Errorf("client: directory answered %q with an account named %q", name, st.Username)
	}
	return st, nil
}

// safetyParty is an account's part of a safety number: its ID and its current devices' public keys.
func safetyParty(st *e2ee.AccountState) safety.Party {
	p := safety.Party{ID: st.Account[:]}
	for _, d := range st.Devices {
		p.DeviceKeys = append(p.DeviceKeys, d.Public.Encode())
	}
	return p
}
