package keyregistry

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/http"
	"time"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/gateway"
)

// WebSocket operations of the messaging-key directory (docs/PROTOCOL.md §7).
// Publishing needs an authenticated connection (a device publishes its own
// key); the lookup is public.
const (
	OpPublishKey = "directory.publish_key"
	OpKey        = "directory.key"
)

// PublishKeyBody publishes the connection's device's signed messaging key
// (e2ee SignedMessagingKey encoding).
type PublishKeyBody struct {
	Key []byte `json:"key"`
}

// KeyJSON is the JSON form of a device's verified messaging key, returned by
// OpPublishKey, OpKey and GET /v1/devices/{id}/key. Clients verify Key
// against the device's signing key from the account chain they replayed.
type KeyJSON struct {
	Account string    `json:"account"`
	Device  string    `json:"device"`
	Public  []byte    `json:"public"` // e2ee DevicePublic encoding, from the chain
	Key     []byte    `json:"key"`    // e2ee SignedMessagingKey encoding
	KeyID   string    `json:"key_id"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	Record  []byte    `json:"record"` // the key record (§5)
}

// ToJSON returns the JSON form of k.
func (k *MessagingKey) ToJSON() KeyJSON {
	kid := k.Key.KeyID()
	id := k.Device.ID()
	return KeyJSON{
		Account: k.Account.String(), Device: id.String(), Public: k.Device.Encode(), Key: k.Key.Encode(),
		KeyID: hex.EncodeToString(kid[:]), Created: k.Key.Created.UTC(), Expires: k.Key.Expires.UTC(), Record: k.Record,
	}
}

// registerKeyOps adds the key operations (RegisterOps calls it).
func (s *Service) registerKeyOps(r OpRegistry) error {
	if err := r.Handle(OpPublishKey, s.opPublishKey); err != nil {
		return fmt.Errorf("keyregistry: register op %s: %w", OpPublishKey, err)
	}
	if err := r.Handle(OpKey, s.opKey, gateway.AllowUnauthenticated()); err != nil {
		return fmt.Errorf("keyregistry: register op %s: %w", OpKey, err)
	}
	return nil
}

func (s *Service) opPublishKey(ctx context.Context, c *gateway.Call) (any, error) {
	var req PublishKeyBody
	if err := decodeBody(c, &req); err != nil {
		return nil, err
	}
	if !c.Authenticated {
		// The hub refuses unauthenticated calls of this op before it gets
		// here; this guards a misregistration.
		return nil, WireError(opErr("publish key", "", fmt.Errorf("%w: not authenticated", ErrBadProof)))
	}
	k, err := s.PublishKey(ctx, e2ee.DeviceID(c.Device), req.Key)
	if err != nil {
		return nil, WireError(err)
	}
	return k.ToJSON(), nil
}

func (s *Service) opKey(ctx context.Context, c *gateway.Call) (any, error) {
	var req DeviceQuery
	if err := decodeBody(c, &req); err != nil {
		return nil, err
	}
	id, err := parseHexID(req.Device)
	if err != nil {
		return nil, WireError(opErr("lookup key", "", err))
	}
	k, err := s.LookupKey(ctx, e2ee.DeviceID(id))
	if err != nil {
		return nil, WireError(err)
	}
	return k.ToJSON(), nil
}

// keyRoutes adds GET /v1/devices/{id}/key (Routes calls it).
func (s *Service) keyRoutes(h Handler) error {
	return h.Handle("GET /v1/devices/{id}/key", http.HandlerFunc(s.httpKey))
}

func (s *Service) httpKey(w http.ResponseWriter, r *http.Request) {
	id, err := e2ee.ParseDeviceID(r.PathValue("id"))
	if err != nil {
		writeError(w, kind(ErrMalformed, err))
		return
	}
	k, err := s.LookupKey(r.Context(), id)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, k.ToJSON())
}
