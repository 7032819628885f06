package keyregistry

import (
	"context"
	"errors"
	"fmt"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	kb "github.com/libp2p/go-libp2p-kbucket"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/iagon/gridchat/e2ee"
)

// KeyTopic is the gossipsub topic on which messaging-key records are
// announced (bare KeyRecord encodings), in a grid with the default protocol
// prefix "/gridchat" (KeyTopicFor).
const KeyTopic = "/gridchat/directory-keys/1"

// KeyTopicFor returns the messaging-key topic of the grid whose protocol
// prefix is prefix: prefix + "/directory-keys/1". The empty prefix is the
// default one and gives KeyTopic.
func KeyTopicFor(prefix protocol.ID) string {
	if prefix == "" {
		return KeyTopic
	}
	return string(prefix) + "/directory-keys/1"
}

// heldKeysPrefix is the datastore prefix of the key records this node
// accepted from its own clients and republishes. It shares no prefix with
// the account records' "/held" and "/pending".
const heldKeysPrefix = "/msgkeys"

func heldKeyRecordKey(id e2ee.DeviceID) ds.Key {
	return ds.NewKey(heldKeysPrefix).ChildString(id.String())
}

// keyDir is the messaging-key part of the directory: a verified cache that
// only moves forward, and the key topic.
type keyDir struct {
	cache *lru[e2ee.DeviceID, *keyHeld]
	topic *pubsub.Topic
	sub   *pubsub.Subscription
	val   keyValidator
}

// MessagingKey is a device's verified current signed messaging key, with the
// account that holds the device.
type MessagingKey struct {
	// Account holds the device (a current, unrevoked device of it).
	Account e2ee.AccountID
	// Device is the device's public keys, from the account's chain.
	Device e2ee.DevicePublic
	// Key is the signed messaging key, verified against Device.
	Key *e2ee.SignedMessagingKey
	// Record is the encoded key record, for clients that verify it
	// themselves (they should: NewRecipientKey against their own replay).
	Record []byte
}

// startKeys sets up the key cache, joins the key topic (if PubSub is set)
// and starts the key gossip and republish loops. Called by New.
func (s *Service) startKeys() error {
	s.keys.cache = newLRU[e2ee.DeviceID, *keyHeld](s.lim.CacheSize, s.lim.CacheTTL, s.cfg.Validator.Now)
	s.keys.val = keyValidator{s.ver}
	if ps := s.cfg.PubSub; ps != nil {
		t, sub, err := joinTopic(ps, KeyTopicFor(s.cfg.ProtocolPrefix), s.validateKeyAnnouncement)
		if err != nil {
			return err
		}
		s.keys.topic, s.keys.sub = t, sub
		s.wg.Go(s.keyGossipLoop)
	}
	s.wg.Go(s.keyRepublishLoop)
	return nil
}

// stopKeys leaves the key topic. Called by Close after the loops stopped.
func (s *Service) stopKeys() {
	if s.keys.sub != nil {
		s.keys.sub.Cancel()
	}
	if s.keys.topic != nil {
		_ = s.cfg.PubSub.UnregisterTopicValidator(KeyTopicFor(s.cfg.ProtocolPrefix))
		_ = s.keys.topic.Close()
	}
}

// PublishKey accepts raw, an encoded e2ee.SignedMessagingKey, from the
// authenticated device dev: the key must name dev, be signed by dev's
// signing key from its account's chain and be valid now; dev must be a
// current device of its account; and the key must not be older than the one
// the grid holds (ErrRollback). The record is stored in the grid, held for
// republishing and announced. Publishing the key already held is a no-op.
func (s *Service) PublishKey(ctx context.Context, dev e2ee.DeviceID, raw []byte) (*MessagingKey, error) {
	const op = "publish key"
	subject := dev.String()
	if len(raw) > MaxKeyRecordSize {
		return nil, s.refuse(op, subject, fmt.Errorf("%w: key of %d bytes", ErrTooLarge, len(raw)))
	}
	k, err := e2ee.DecodeSignedMessagingKey(raw)
	if err != nil {
		return nil, s.refuse(op, subject, kind(ErrMalformed, err))
	}
	if k.Device != dev {
		return nil, s.refuse(op, subject, fmt.Errorf("%w: key of device %s published by %s", ErrAccountMismatch, k.Device, dev))
	}
	acct, d, err := s.LookupDevice(ctx, dev)
	if err != nil {
		return nil, s.refuse(op, subject, causeOf(err))
	}
	if d.Revoked {
		return nil, s.refuse(op, subject, fmt.Errorf("%w: revoked at statement %d", ErrDeviceRevoked, d.RevokedAt))
	}
	rawRec, err := s.ver.codec.marshalKey(&KeyRecord{Device: d.Public, Key: k})
	if err != nil {
		return nil, s.refuse(op, subject, err)
	}
	h, err := s.ver.openKey(rawRec, &dev)
	if err != nil {
		return nil, s.refuse(op, subject, err)
	}
	// A device publishes on every connection: the key this node already
	// verified and cached is answered without asking the grid again.
	cur, cached := s.keys.cache.get(dev)
	if !cached || cur.olderThan(h) {
		if cur, err = s.newestKey(ctx, dev); err != nil && !errors.Is(err, ErrNotFound) {
			return nil, s.refuse(op, subject, err)
		}
	}
	if cur != nil {
		if h.olderThan(cur) {
			return nil, s.refuse(op, subject, fmt.Errorf("%w: key created %s, the grid holds one created %s", ErrRollback,
				k.Created.Format(time.RFC3339), cur.rec.Key.Created.Format(time.RFC3339)))
		}
		if !cur.olderThan(h) { // the same record
			return &MessagingKey{Account: acct.ID, Device: d.Public, Key: cur.rec.Key, Record: cur.raw}, nil
		}
	}
	if err := s.storeKey(ctx, h); err != nil {
		return nil, s.refuse(op, subject, err)
	}
	if err := s.holdKey(ctx, h); err != nil {
		return nil, s.refuse(op, subject, err)
	}
	s.adoptKey(h, true)
	if s.keys.topic != nil {
		if err := s.keys.topic.Publish(ctx, h.raw); err != nil {
			s.log.Warn("announce messaging key", "device", subject, "err", err)
		}
	}
	s.m.accepted.WithLabelValues(op).Inc()
	return &MessagingKey{Account: acct.ID, Device: d.Public, Key: k, Record: h.raw}, nil
}

// LookupKey returns device id's current signed messaging key. The device
// must be a current device of its account: the account's chain is looked up
// (from the cache, kept fresh by gossip, or the grid) and a revoked device's
// key is refused with ErrDeviceRevoked, whatever the key namespace holds.
// The key is verified against the device's keys from the chain.
func (s *Service) LookupKey(ctx context.Context, id e2ee.DeviceID) (*MessagingKey, error) {
	const op = "lookup key"
	acct, d, err := s.LookupDevice(ctx, id)
	if err != nil {
		return nil, opErr(op, id.String(), causeOf(err))
	}
	if d.Revoked {
		return nil, opErr(op, id.String(), fmt.Errorf("%w: revoked at statement %d", ErrDeviceRevoked, d.RevokedAt))
	}
	h, ok := s.keys.cache.get(id)
	if ok {
		s.m.lookups.WithLabelValues("cache").Inc()
	} else {
		s.m.lookups.WithLabelValues("dht").Inc()
		if h, err = s.newestKey(ctx, id); err != nil {
			return nil, opErr(op, id.String(), err)
		}
	}
	// The record's own device field is not trusted: the key is checked
	// against the chain's keys for the device.
	if err := checkMessagingKey(h.rec.Key, d.Public, s.now()); err != nil {
		return nil, opErr(op, id.String(), err)
	}
	return &MessagingKey{Account: acct.ID, Device: d.Public, Key: h.rec.Key, Record: h.raw}, nil
}

// newestKey asks the grid for device id's key record and returns the newest
// of the grid's answer and the cache's floor (adopting the answer).
func (s *Service) newestKey(ctx context.Context, id e2ee.DeviceID) (*keyHeld, error) {
	got, err := s.fetchKey(ctx, id)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			if old, ok := s.keys.cache.peek(id); ok {
				return old, nil
			}
		}
		return nil, err
	}
	return s.adoptKey(got, true), nil
}

// fetchKey asks the grid for device id's key record with the lookup quorum
// and returns the newest valid answer.
func (s *Service) fetchKey(ctx context.Context, id e2ee.DeviceID) (*keyHeld, error) {
	return searchBest(ctx, s, MessagingKeyKey(id), s.keys.val.open, (*keyHeld).olderThan)
}

// adoptKey offers a verified key record to the cache, which only moves
// forward (an older key is refused and counted), and returns the newest
// known. insert is false for gossip, which only refreshes cached devices.
func (s *Service) adoptKey(h *keyHeld, insert bool) *keyHeld {
	id := h.rec.Device.ID()
	out := h
	s.keys.cache.update(id, func(old *keyHeld, had bool) (*keyHeld, bool) {
		if !had {
			return h, insert
		}
		if h.olderThan(old) {
			out = old
			if h.rec.Key.Created.Before(old.rec.Key.Created) {
				s.m.staleRefused.WithLabelValues("key", "rollback").Inc()
			}
		}
		return out, true
	})
	if out == h {
		s.advanceHeldKey(h)
	}
	return out
}

// storeKey puts h under its device's key. A node alone keeps it locally.
func (s *Service) storeKey(ctx context.Context, h *keyHeld) error {
	ctx, cancel := context.WithTimeout(ctx, s.lim.PutTimeout)
	defer cancel()
	err := s.cfg.Router.PutValue(ctx, MessagingKeyKey(h.rec.Device.ID()), h.raw)
	if errors.Is(err, kb.ErrLookupFailure) {
		s.log.Warn("no peer to store the messaging key on yet; kept locally", "device", h.rec.Device.ID().String())
		return nil
	}
	if err != nil {
		return storeFailure(err)
	}
	return nil
}

// holdKey keeps h for republishing; the held copy only moves forward.
func (s *Service) holdKey(ctx context.Context, h *keyHeld) error {
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	return s.holdKeyLocked(ctx, h)
}

func (s *Service) holdKeyLocked(ctx context.Context, h *keyHeld) error {
	key := heldKeyRecordKey(h.rec.Device.ID())
	old, err := s.cfg.Datastore.Get(ctx, key)
	switch {
	case errors.Is(err, ds.ErrNotFound):
	case err != nil:
		return fmt.Errorf("hold key: %w", err)
	default:
		if oh, err := s.ver.openKey(old, nil); err == nil && !oh.olderThan(h) {
			return nil
		}
	}
	if err := s.cfg.Datastore.Put(ctx, key, h.raw); err != nil {
		return fmt.Errorf("hold key: %w", err)
	}
	return nil
}

// advanceHeldKey moves the held copy of h's device forward if this node
// holds one.
func (s *Service) advanceHeldKey(h *keyHeld) {
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	if ok, err := s.cfg.Datastore.Has(s.ctx, heldKeyRecordKey(h.rec.Device.ID())); err != nil || !ok {
		return
	}
	if err := s.holdKeyLocked(s.ctx, h); err != nil {
		s.log.Warn("advance held messaging key", "device", h.rec.Device.ID().String(), "err", err)
	}
}

// validateKeyAnnouncement checks a key announcement: it must be a valid key
// record (else the sender is penalised) and not older than the cached one
// (else it is dropped without penalty).
func (s *Service) validateKeyAnnouncement(_ context.Context, _ peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	if len(msg.Data) > MaxKeyRecordSize {
		s.m.gossip.WithLabelValues("too_large").Inc()
		return pubsub.ValidationReject
	}
	h, err := s.ver.openKey(msg.Data, nil)
	if err != nil {
		s.m.gossip.WithLabelValues("invalid").Inc()
		return pubsub.ValidationReject
	}
	if old, ok := s.keys.cache.peek(h.rec.Device.ID()); ok && h.olderThan(old) {
		s.m.gossip.WithLabelValues("rollback").Inc()
		return pubsub.ValidationIgnore
	}
	msg.ValidatorData = h
	return pubsub.ValidationAccept
}

// keyGossipLoop feeds validated key announcements into the cache until
// Close.
func (s *Service) keyGossipLoop() {
	for {
		msg, err := s.keys.sub.Next(s.ctx)
		if err != nil {
			if !errors.Is(err, context.Canceled) && s.ctx.Err() == nil {
				s.log.Warn("directory key topic", "err", err)
			}
			return
		}
		if h, ok := msg.ValidatorData.(*keyHeld); ok {
			s.m.gossip.WithLabelValues("accepted").Inc()
			s.adoptKey(h, false)
		}
	}
}

// keyRepublishLoop runs RepublishKeys every RepublishInterval.
func (s *Service) keyRepublishLoop() {
	t := time.NewTicker(s.lim.RepublishInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if n, err := s.RepublishKeys(s.ctx); err != nil && s.ctx.Err() == nil {
				s.log.Warn("republish messaging keys", "records", n, "err", err)
			}
		case <-s.ctx.Done():
			return
		}
	}
}

// RepublishKeys stores every key record this node holds in the grid again
// and returns how many it stored. A held key that expired is forgotten (its
// device publishes a new one when it next connects).
func (s *Service) RepublishKeys(ctx context.Context) (int, error) {
	res, err := s.cfg.Datastore.Query(ctx, query.Query{Prefix: heldKeysPrefix})
	if err != nil {
		return 0, fmt.Errorf("keyregistry: republish keys: %w", err)
	}
	var entries []query.Result
	for e := range res.Next() {
		entries = append(entries, e)
	}
	res.Close()
	n := 0
	var errs []error
	for _, e := range entries {
		if e.Error != nil {
			errs = append(errs, e.Error)
			continue
		}
		h, err := s.ver.openKey(e.Value, nil)
		if errors.Is(err, ErrKeyExpired) {
			_ = s.cfg.Datastore.Delete(ctx, ds.NewKey(e.Key))
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("held key %s: %w", e.Key, err))
			continue
		}
		if err := s.storeKey(ctx, h); err != nil {
			errs = append(errs, fmt.Errorf("device %s: %w", h.rec.Device.ID(), err))
			continue
		}
		n++
		s.m.republished.Inc()
	}
	if err := errors.Join(errs...); err != nil {
		return n, fmt.Errorf("keyregistry: republish keys: %w", err)
	}
	return n, nil
}

// causeOf returns the cause inside a directory *Error, so an operation can
// wrap it with its own name.
func causeOf(err error) error {
	var e *Error
	if errors.As(err, &e) && e.Err != nil {
		return e.Err
	}
	return err
}
