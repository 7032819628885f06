package keyregistry_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/keyregistry"
)

// waitKey polls node i's directory until device id's key has the given
// creation time, or fails after 20 s (gossip under -race on a loaded machine).
func (g *grid) waitKey(i int, id e2ee.DeviceID, created time.Time) {
	g.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		k, err := g.dir(i).LookupKey(ctxT(g.t), id)
		if err == nil && k.Key.Created.Equal(created) {
			return
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("node %d: key of %s created %s not seen: last %v, %v", i, id, created, k, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func keyRecord(t testing.TB, dev e2ee.DevicePublic, k *e2ee.SignedMessagingKey) []byte {
	t.Helper()
	b, err := (&keyregistry.KeyRecord{Device: dev, Key: k}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMessagingKeyPublishedOnOneNodeIsServedEverywhereAndMovesOnlyForward(t *testing.T) {
	g := newGrid(t, 3)
	u, _ := g.register(0, "conn-u")
	dev := u.devs[0]
	first := dev.MessagingKey()

	if _, err := g.dir(1).LookupKey(ctxT(t), dev.ID()); !errors.Is(err, keyregistry.ErrNotFound) {
		t.Fatalf("lookup before publication: %v, want not found", err)
	}
	got, err := g.dir(0).PublishKey(ctxT(t), dev.ID(), first.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if got.Account != u.id || got.Key.KeyID() != first.KeyID() {
		t.Fatalf("published key: account %s key %x", got.Account, got.Key.KeyID())
	}
	g.forgetAll()
	for i := range g.nodes {
		k, err := g.dir(i).LookupKey(ctxT(t), dev.ID())
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		if k.Key.KeyID() != first.KeyID() || !k.Device.Equal(dev.Public()) {
			t.Fatalf("node %d served another key", i)
		}
		if _, err := e2ee.NewRecipientKey(dev.Public(), k.Key, g.clock.Now()); err != nil {
			t.Fatalf("node %d: served key does not verify: %v", i, err)
		}
	}
	// Publishing the same key again is a no-op.
	if _, err := g.dir(2).PublishKey(ctxT(t), dev.ID(), first.Encode()); err != nil {
		t.Fatalf("republishing the same key: %v", err)
	}

	// A rotated key reaches nodes that cached the old one, by gossip.
	newer, err := dev.RotateMessagingKey(g.clock.Now().Add(2*time.Second), e2ee.DefaultMessagingKeyLifetime)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.dir(1).PublishKey(ctxT(t), dev.ID(), newer.Encode()); err != nil {
		t.Fatal(err)
	}
	for i := range g.nodes {
		g.waitKey(i, dev.ID(), newer.Created)
	}

	t.Run("older than the held one", func(t *testing.T) {
		_, err := g.dir(2).PublishKey(ctxT(t), dev.ID(), first.Encode())
		mustRefuse(t, "older key", err, keyregistry.ErrRollback)
		if err := g.nodes[2].DHT().PutValue(ctxT(t), keyregistry.MessagingKeyKey(dev.ID()), keyRecord(t, dev.Public(), first)); err == nil {
			t.Fatal("DHT replaced a key by an older one")
		}
		g.forgetAll()
		for i := range g.nodes {
			g.waitKey(i, dev.ID(), newer.Created)
		}
	})

	t.Run("signed by another device", func(t *testing.T) {
		other, err := e2ee.NewDeviceKeys(g.clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		_, err = g.dir(0).PublishKey(ctxT(t), dev.ID(), other.MessagingKey().Encode())
		mustRefuse(t, "another device's key", err, keyregistry.ErrAccountMismatch)
		forged := other.MessagingKey()
		forged.Device = dev.ID()
		forged.Created = g.clock.Now().Add(time.Minute).Truncate(time.Second)
		_, err = g.dir(0).PublishKey(ctxT(t), dev.ID(), forged.Encode())
		mustRefuse(t, "forged key", err, keyregistry.ErrBadSignature)
		if err := g.nodes[0].DHT().PutValue(ctxT(t), keyregistry.MessagingKeyKey(dev.ID()), keyRecord(t, dev.Public(), forged)); err == nil {
			t.Fatal("DHT accepted a key signed by another device")
		}
		// Filed under another device's key: refused by the validator.
		if err := g.nodes[0].DHT().PutValue(ctxT(t), keyregistry.MessagingKeyKey(other.ID()), keyRecord(t, dev.Public(), newer)); err == nil {
			t.Fatal("DHT accepted a key record under another device's key")
		}
		g.forgetAll()
		g.waitKey(1, dev.ID(), newer.Created)
	})

	t.Run("expired", func(t *testing.T) {
		old, err := e2ee.NewDeviceKeys(g.clock.Now().Add(-30 * 24 * time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		v := keyregistry.Validators(keyregistry.ValidatorConfig{Now: g.clock.Now})[keyregistry.NSKey]
		err = v.Validate(keyregistry.MessagingKeyKey(old.ID()), keyRecord(t, old.Public(), old.MessagingKey()))
		mustRefuse(t, "expired key record", err, keyregistry.ErrKeyExpired)
		expired, err := dev.RotateMessagingKey(g.clock.Now().Add(-time.Hour), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		_, err = g.dir(0).PublishKey(ctxT(t), dev.ID(), expired.Encode())
		mustRefuse(t, "expired key", err, keyregistry.ErrKeyExpired)
		g.forgetAll()
		g.waitKey(2, dev.ID(), newer.Created)
	})

	if n, err := g.dir(1).RepublishKeys(ctxT(t)); err != nil || n != 1 {
		t.Fatalf("republish keys on the publishing node: %d, %v", n, err)
	}
}

func TestKeysOfRevokedDeviceAreNotServedOrAccepted(t *testing.T) {
	g := newGrid(t, 3)
	u, _ := g.register(0, "conn-u")
	linked := g.link(u)
	g.mustSubmit(0, u)
	if _, err := g.dir(0).PublishKey(ctxT(t), linked.ID(), linked.MessagingKey().Encode()); err != nil {
		t.Fatal(err)
	}
	g.waitKey(1, linked.ID(), linked.MessagingKey().Created)

	g.appendStmt(u, u.devs[0], &e2ee.RevokeDevice{Device: linked.ID()})
	g.mustSubmit(2, u)
	// Node 1 cached the key and the account; the revocation arrives by gossip.
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := g.dir(1).LookupKey(ctxT(t), linked.ID())
		if errors.Is(err, keyregistry.ErrDeviceRevoked) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node 1 still serves the revoked device's key: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	g.forgetAll()
	for i := range g.nodes {
		_, err := g.dir(i).LookupKey(ctxT(t), linked.ID())
		mustRefuse(t, "lookup of a revoked device's key", err, keyregistry.ErrDeviceRevoked)
	}
	rotated, err := linked.RotateMessagingKey(g.clock.Now().Add(2*time.Second), e2ee.DefaultMessagingKeyLifetime)
	if err != nil {
		t.Fatal(err)
	}
	_, err = g.dir(0).PublishKey(ctxT(t), linked.ID(), rotated.Encode())
	mustRefuse(t, "publication by a revoked device", err, keyregistry.ErrDeviceRevoked)

	resp, err := http.Get(g.nodes[1].GatewayURL() + "/v1/devices/" + linked.ID().String() + "/key")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Error keyregistry.ErrorJSON }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusGone || body.Error.Code != keyregistry.CodeDeviceRevoked || body.Error.Reason != "directory_device_revoked" {
		t.Fatalf("HTTP lookup of a revoked device's key: %d %+v", resp.StatusCode, body.Error)
	}
	// The current device's key is still served over HTTP.
	if _, err := g.dir(0).PublishKey(ctxT(t), u.devs[0].ID(), u.devs[0].MessagingKey().Encode()); err != nil {
		t.Fatal(err)
	}
	resp2, err := http.Get(g.nodes[2].GatewayURL() + "/v1/devices/" + u.devs[0].ID().String() + "/key")
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	var kj keyregistry.KeyJSON
	if err := json.NewDecoder(resp2.Body).Decode(&kj); err != nil || resp2.StatusCode != http.StatusOK {
		t.Fatalf("HTTP key lookup: %d %v", resp2.StatusCode, err)
	}
	k, err := e2ee.DecodeSignedMessagingKey(kj.Key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e2ee.NewRecipientKey(u.devs[0].Public(), k, g.clock.Now()); err != nil || kj.Account != u.id.String() {
		t.Fatalf("HTTP key lookup served an unverifiable key: %v", err)
	}
}
