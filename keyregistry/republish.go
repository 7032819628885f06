package keyregistry

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"

	"github.com/iagon/gridchat/e2ee"
)

func heldKey(id e2ee.AccountID) ds.Key { return heldPrefix.ChildString(id.String()) }

// pendingPrefix marks the held accounts that have statements without a log
// receipt, so UpgradeReceipts visits only those.
const pendingPrefix = "/pending"

func pendingKey(id e2ee.AccountID) ds.Key { return ds.NewKey(pendingPrefix).ChildString(id.String()) }

// markPending records whether h's account still has statements without a
// receipt.
func (s *Service) markPending(ctx context.Context, h *held) error {
	if uint64(len(h.rec.Receipts)) < h.acct.Length {
		return s.cfg.Datastore.Put(ctx, pendingKey(h.acct.ID), nil)
	}
	return s.cfg.Datastore.Delete(ctx, pendingKey(h.acct.ID))
}

// hold records h as held by this node (it registered or updated it), so the
// node republishes it. The held copy only moves forward.
func (s *Service) hold(ctx context.Context, h *held) error {
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	return s.holdLocked(ctx, h)
}

func (s *Service) holdLocked(ctx context.Context, h *held) error {
	key := heldKey(h.acct.ID)
	old, err := s.cfg.Datastore.Get(ctx, key)
	switch {
	case errors.Is(err, ds.ErrNotFound):
	case err != nil:
		return fmt.Errorf("hold: %w", err)
	default:
		if oh, err := s.ver.open(old); err == nil {
			rel := relate(oh, h)
			if rel == e2ee.RolledBack || rel == e2ee.Forked || rel == e2ee.Same && !betterSame(oh, h) {
				return nil
			}
		}
	}
	if err := s.cfg.Datastore.Put(ctx, key, h.raw); err != nil {
		return fmt.Errorf("hold: %w", err)
	}
	return nil
}

// advanceHeld moves the held copy of h's account forward if this node holds
// it (a newer record arrived by gossip or lookup).
func (s *Service) advanceHeld(h *held) {
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	ok, err := s.cfg.Datastore.Has(s.ctx, heldKey(h.acct.ID))
	if err != nil || !ok {
		return
	}
	if err := s.holdLocked(s.ctx, h); err != nil {
		s.log.Warn("advance held record", "account", h.acct.ID.String(), "err", err)
	}
}

// republishLoop stores every held record again every RepublishInterval.
func (s *Service) republishLoop() {
	t := time.NewTicker(s.lim.RepublishInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if n, err := s.Republish(s.ctx); err != nil && s.ctx.Err() == nil {
				s.log.Warn("republish", "records", n, "err", err)
			}
		case <-s.ctx.Done():
			return
		}
	}
}

// Republish stores every record this node holds in the grid again, under
// all its keys, and returns how many it stored. A held record that no
// longer verifies (e.g. its username claim lapsed) is stored under the keys
// it is still valid for. A held record that names a username is first
// brought up to the account's latest record in the grid, so a node that
// missed the account's rename never stores its stale claim of the name it
// left (it stores the release instead).
func (s *Service) Republish(ctx context.Context) (int, error) {
	res, err := s.cfg.Datastore.Query(ctx, query.Query{Prefix: heldPrefix.String()})
	if err != nil {
		return 0, fmt.Errorf("keyregistry: republish: %w", err)
	}
	defer res.Close()
	n := 0
	var errs []error
	for e := range res.Next() {
		if e.Error != nil {
			errs = append(errs, e.Error)
			continue
		}
		h, err := s.ver.open(e.Value)
		if err != nil {
			errs = append(errs, fmt.Errorf("held record %s: %w", e.Key, err))
			continue
		}
		if h.acct.Username != "" {
			if cur, err := s.latest(ctx, h.acct.ID); err == nil && relate(h, cur) == e2ee.Extends {
				s.advanceHeld(cur)
				h = cur
			}
		}
		if err := s.store(ctx, h); err != nil {
			errs = append(errs, fmt.Errorf("account %s: %w", h.acct.ID, err))
			continue
		}
		n++
		s.m.republished.Inc()
	}
	if err := errors.Join(errs...); err != nil {
		return n, fmt.Errorf("keyregistry: republish: %w", err)
	}
	return n, nil
}

// receiptRetryLoop runs UpgradeReceipts every ReceiptRetryInterval.
func (s *Service) receiptRetryLoop() {
	t := time.NewTicker(s.lim.ReceiptRetryInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if _, err := s.UpgradeReceipts(s.ctx); err != nil && s.ctx.Err() == nil {
				s.log.Info("receipt retry", "err", err)
			}
		case <-s.ctx.Done():
			return
		}
	}
}

// UpgradeReceipts publishes again the statements of held records that have
// no log receipt yet (the log had no witness quorum when they were
// accepted), and stores, holds and announces each record whose receipts it
// completed or extended. It returns how many records it upgraded; a
// statement that still cannot be published is left for the next round.
func (s *Service) UpgradeReceipts(ctx context.Context) (int, error) {
	if s.cfg.Publisher == nil {
		return 0, nil
	}
	res, err := s.cfg.Datastore.Query(ctx, query.Query{Prefix: pendingPrefix, KeysOnly: true})
	if err != nil {
		return 0, fmt.Errorf("keyregistry: upgrade receipts: %w", err)
	}
	var keys []ds.Key
	for e := range res.Next() {
		if e.Error == nil {
			keys = append(keys, ds.NewKey(e.Key))
		}
	}
	res.Close()
	var pending []*held
	for _, k := range keys {
		raw, err := s.cfg.Datastore.Get(ctx, heldPrefix.ChildString(k.BaseNamespace()))
		if err != nil {
			continue
		}
		h, err := s.ver.open(raw)
		if err != nil {
			continue
		}
		if uint64(len(h.rec.Receipts)) >= h.acct.Length {
			// Completed meanwhile (a later update carried every receipt).
			_ = s.cfg.Datastore.Delete(ctx, k)
			continue
		}
		pending = append(pending, h)
	}
	n := 0
	var errs []error
	for _, h := range pending {
		got, perr := s.publishFrom(ctx, h, 0)
		if len(got) > 0 {
			if err := s.addReceipts(ctx, h, got); err != nil {
				errs = append(errs, fmt.Errorf("account %s: %w", h.acct.ID, err))
			} else {
				n++
			}
		}
		if perr != nil {
			errs = append(errs, fmt.Errorf("account %s: %w", h.acct.ID, perr))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return n, fmt.Errorf("keyregistry: upgrade receipts: %w", err)
	}
	return n, nil
}

// addReceipts stores h's record with the receipts got added.
func (s *Service) addReceipts(ctx context.Context, h *held, got []Receipt) error {
	all := append(append([]Receipt(nil), h.rec.Receipts...), got...)
	slices.SortFunc(all, func(a, b Receipt) int { return cmp.Compare(a.Seq, b.Seq) })
	raw, err := s.ver.codec.marshal(&Record{Chain: h.rec.Chain, Receipts: all})
	if err != nil {
		return err
	}
	full, err := s.ver.open(raw)
	if err != nil {
		return err
	}
	if err := s.store(ctx, full); err != nil {
		return err
	}
	if err := s.hold(ctx, full); err != nil {
		return err
	}
	if err := s.markPending(ctx, full); err != nil {
		return err
	}
	s.adopt(full, "local")
	s.announce(ctx, full)
	return nil
}
