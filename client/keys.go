package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/wire"
)

// Signed messaging keys (docs/PROTOCOL.md §9.1). Each device publishes its current signed messaging key in
// the key directory (operation directory.publish_key) after every authentication and after every rotation. A
// device that needs another device's key uses a verified key it holds, or else fetches the key from the
// directory (GET /v1/devices/{id}/key), which serves keys of current devices only; so a first message reaches a
// device that has never been online since anyone looked for it. Only if the directory has no usable key (a
// grid whose nodes predate the key namespace, or a directory that cannot be reached) does the client fall back to
// the envelope exchange: it sends the device a key request (an envelope with WantKeys set and no message), which
// the device answers as soon as it is online. A device also attaches its current key to every envelope carrying
// a key distribution, so a rotation reaches its peers without a lookup. Every key, however it arrives, is
// verified with e2ee.NewRecipientKey against the device's keys from its account's replayed chain before it is
// used or kept.

// Directory operation that publishes this device's signed messaging key (authenticated).
const opDirPublishKey = "directory.publish_key"

type publishKeyRequest struct {
	Key []byte `json:"key"` // e2ee SignedMessagingKey encoding
}

// maxKeyResponse caps the directory's answer to a key lookup (a few KiB of keys, base64 in JSON).
const maxKeyResponse = 64 << 10

const bucketKeys = "mkeys" // device hex → e2ee.SignedMessagingKey encoding

// keyBook keeps verified signed messaging keys of other devices and wakes those waiting for one.
type keyBook struct {
	mu      sync.Mutex
	waiters map[e2ee.DeviceID][]chan struct{}
}

func randRead(b []byte) (int, error) { return rand.Read(b) }

// storeKey verifies raw as dev's signed messaging key and keeps it if it is newer than the one held.
func (c *Client) storeKey(dev e2ee.DevicePublic, raw []byte) error {
	k, err := e2ee.DecodeSignedMessagingKey(raw)
	if err != nil {
		return err
	}
	if _, err := e2ee.NewRecipientKey(dev, k, c.cfg.Now()); err != nil {
		return err
	}
	if old, ok := c.st.Get(bucketKeys, dev.ID().String()); ok {
		if ok2, err := e2ee.DecodeSignedMessagingKey(old); err == nil && !ok2.Created.Before(k.Created) {
			return nil
		}
	}
	if err := c.st.Put(bucketKeys, dev.ID().String(), raw); err != nil {
		return err
	}
	c.keys.mu.Lock()
	ws := c.keys.waiters[dev.ID()]
	delete(c.keys.waiters, dev.ID())
	c.keys.mu.Unlock()
	for _, w := range ws {
		close(w)
	}
	return nil
}

// heldKey returns dev's verified recipient key if this client holds a valid one.
func (c *Client) heldKey(dev e2ee.DevicePublic) (e2ee.RecipientKey, bool) {
	raw, ok := c.st.Get(bucketKeys, dev.ID().String())
	if !ok {
		return e2ee.RecipientKey{}, false
	}
	k, err := e2ee.DecodeSignedMessagingKey(raw)
	if err != nil {
		return e2ee.RecipientKey{}, false
	}
	rk, err := e2ee.NewRecipientKey(dev, k, c.cfg.Now())
	if err != nil {
		return e2ee.RecipientKey{}, false
	}
	return rk, true
}

// recipientKey implements keySource: a held key, else the directory's, else one asked for and waited for (as
// long as ctx and KeyWait allow).
func (c *Client) recipientKey(ctx context.Context, dev e2ee.DevicePublic) (e2ee.RecipientKey, error) {
	if rk, ok := c.heldKey(dev); ok {
		return rk, nil
	}
	rk, err := c.directoryKey(ctx, dev)
	if err == nil {
		return rk, nil
	}
	if errors.Is(err, ErrRevokedDevice) || ctx.Err() != nil {
		return e2ee.RecipientKey{}, err
	}
	c.log.Info("no usable messaging key in the directory; asking the device", "device", dev.ID(), "err", err)
	ch := make(chan struct{})
	c.keys.mu.Lock()
	if c.keys.waiters == nil {
		c.keys.waiters = map[e2ee.DeviceID][]chan struct{}{}
	}
	c.keys.waiters[dev.ID()] = append(c.keys.waiters[dev.ID()], ch)
	c.keys.mu.Unlock()
	if rk, ok := c.heldKey(dev); ok { // it may have arrived meanwhile
		return rk, nil
	}
	if err := c.sendKeys(ctx, dev.ID(), true); err != nil {
		return e2ee.RecipientKey{}, fmt.Errorf("client: ask device %s for its messaging key: %w", dev.ID(), err)
	}
	wctx, cancel := context.WithTimeout(ctx, c.cfg.KeyWait)
	defer cancel()
	select {
	case <-ch:
	case <-wctx.Done():
		return e2ee.RecipientKey{}, fmt.Errorf("%w: device %s has not answered with its messaging key (offline?)", ErrKeyUnavailable, dev.ID())
	}
	if rk, ok := c.heldKey(dev); ok {
		return rk, nil
	}
	return e2ee.RecipientKey{}, fmt.Errorf("%w: device %s", ErrKeyUnavailable, dev.ID())
}

// sendKeys sends this device's signed messaging key to dev, asking for its key in return if want is set.
func (c *Client) sendKeys(ctx context.Context, dev e2ee.DeviceID, want bool) error {
	env, err := c.cd.encodeEnvelope(&envelope{Keys: [][]byte{c.dev.MessagingKey().Encode()}, WantKeys: want})
	if err != nil {
		return err
	}
	var id wire.MessageID
	rand.Read(id[:])
	_, err = c.send(ctx, id, env, []e2ee.DeviceID{dev})
	return err
}

// ownKeyAttachment is what the engine attaches to envelopes carrying a key distribution.
func (c *Client) ownKeyAttachment() [][]byte { return [][]byte{c.dev.MessagingKey().Encode()} }

// directoryKey fetches dev's signed messaging key from the key directory, verifies it against dev (from the
// account's replayed chain) and keeps it.
func (c *Client) directoryKey(ctx context.Context, dev e2ee.DevicePublic) (e2ee.RecipientKey, error) {
	raw, err := c.lookupKey(ctx, dev.ID())
	if err != nil {
		return e2ee.RecipientKey{}, err
	}
	k, err := e2ee.DecodeSignedMessagingKey(raw)
	if err != nil {
		return e2ee.RecipientKey{}, fmt.Errorf("client: directory served a bad key for device %s: %w", dev.ID(), err)
	}
	rk, err := e2ee.NewRecipientKey(dev, k, c.cfg.Now())
	if err != nil {
		return e2ee.RecipientKey{}, fmt.Errorf("client: directory served a key for device %s that does not verify: %w", dev.ID(), err)
	}
	if err := c.storeKey(dev, raw); err != nil {
		c.log.Warn("keeping a directory messaging key failed", "device", dev.ID(), "err", err)
	}
	return rk, nil
}

// directoryKeyAnswer is the part of the directory's key answer the client reads; it verifies the key itself.
type directoryKeyAnswer struct {
	Key []byte `json:"key"`
}

// lookupKey asks the gateway in use for device id's signed messaging key (GET /v1/devices/{id}/key).
func (c *Client) lookupKey(ctx context.Context, id e2ee.DeviceID) ([]byte, error) {
	var a directoryKeyAnswer
	err := c.directoryGet(ctx, "/v1/devices/"+id.String()+"/key", maxKeyResponse, &a)
	if errors.Is(err, errDirectoryGone) {
		return nil, fmt.Errorf("%w: device %s (directory)", ErrRevokedDevice, id)
	}
	if err != nil {
		return nil, err
	}
	return a.Key, nil
}

// ownKey is this device's current signed messaging key, encoded.
func (c *Client) ownKey() []byte {
	c.eng.mu.Lock()
	defer c.eng.mu.Unlock()
	return c.dev.MessagingKey().Encode()
}

// publishOwnKey publishes this device's current signed messaging key in the directory through cn.
func (c *Client) publishOwnKey(ctx context.Context, cn *conn) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
	if err := cn.call(ctx, opDirPublishKey, publishKeyRequest{Key: c.ownKey()}, nil); err != nil {
		return fmt.Errorf("client: publish messaging key: %w", err)
	}
	return nil
}

// PublishKey puts this device's current signed messaging key in the key directory through the gateway in use,
// waiting for a connection until ctx ends, and returns once the directory holds it. The client publishes its key
// after every authentication anyway, in the background; a program that exits right after Register or Link
// (a command-line "init") calls PublishKey first, so that others can start conversations with the device while
// it is offline.
func (c *Client) PublishKey(ctx context.Context) error {
	if err := c.call(ctx, opDirPublishKey, publishKeyRequest{Key: c.ownKey()}, nil); err != nil {
		return fmt.Errorf("client: publish messaging key: %w", err)
	}
	return nil
}
