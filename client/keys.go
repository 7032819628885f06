package client

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/wire"
)

// Signed messaging keys travel between devices inside envelopes (docs/PROTOCOL.md §9.1): the key directory
// holds each device's signing and registration keys (in the account chain), but not the signed messaging key
// that e2ee.NewRecipientKey needs. So a device attaches its current signed messaging key to every envelope that
// carries a key distribution, and a device that needs another's key sends it a key request (an envelope with
// WantKeys set and no message), which the other device answers as soon as it is online. Every key is verified
// against the device's keys from its replayed chain before it is kept.

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

// recipientKey implements keySource: a held key, or one asked for and waited for (as long as ctx allows).
func (c *Client) recipientKey(ctx context.Context, dev e2ee.DevicePublic) (e2ee.RecipientKey, error) {
	if rk, ok := c.heldKey(dev); ok {
		return rk, nil
	}
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
