package keyregistry

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/iagon/gridchat/e2ee"
)

// AccountJSON is the JSON form of a verified account, returned by the HTTP
// routes and the WebSocket lookup operations (docs/PROTOCOL.md §7). Clients
// should replay Record themselves rather than trust the other fields.
type AccountJSON struct {
	Account    string       `json:"account"`
	Length     uint64       `json:"length"`
	Head       string       `json:"head"`
	Username   string       `json:"username,omitempty"`
	UsernameAt *time.Time   `json:"username_at,omitempty"`
	Devices    []DeviceJSON `json:"devices"`
	Profile    *ProfileJSON `json:"profile,omitempty"`
	Record     []byte       `json:"record"`
}

// DeviceJSON is the JSON form of one device of an account.
type DeviceJSON struct {
	ID        string `json:"id"`
	Public    []byte `json:"public"` // e2ee DevicePublic encoding
	Added     uint64 `json:"added"`
	Revoked   bool   `json:"revoked"`
	RevokedAt uint64 `json:"revoked_at,omitempty"`
}

// ProfileJSON is the JSON form of an account's profile.
type ProfileJSON struct {
	Name        string `json:"name,omitempty"`
	Description string `json:"description,omitempty"`
	PictureRef  string `json:"picture_ref,omitempty"`
	PictureHash []byte `json:"picture_hash,omitempty"`
}

// ErrorJSON is the JSON error body of the HTTP routes.
type ErrorJSON struct {
	Code    Code   `json:"code"`
	Reason  string `json:"reason"`
	Message string `json:"message,omitempty"`
}

// ToJSON returns the JSON form of a.
func (a *Account) ToJSON() AccountJSON {
	out := AccountJSON{
		Account: a.ID.String(), Length: a.Length, Head: hex.EncodeToString(a.Head[:]),
		Username: a.Username, Devices: make([]DeviceJSON, 0, len(a.Devices)), Record: a.Record,
	}
	if a.Username != "" {
		t := a.UsernameAt
		out.UsernameAt = &t
	}
	p := a.Profile
	if p.Name != "" || p.Description != "" || p.PictureRef != "" || len(p.PictureHash) > 0 {
		out.Profile = &ProfileJSON{Name: p.Name, Description: p.Description, PictureRef: p.PictureRef, PictureHash: p.PictureHash}
	}
	for _, d := range a.Devices {
		out.Devices = append(out.Devices, DeviceJSON{ID: d.ID.String(), Public: d.Public.Encode(), Added: d.Added, Revoked: d.Revoked, RevokedAt: d.RevokedAt})
	}
	return out
}

// Handler is what the gateway's HTTP server takes routes with
// (*gateway.Server satisfies it).
type Handler interface {
	Handle(pattern string, h http.Handler) error
}

// Routes adds the directory's public, read-only HTTP routes:
//
//	GET /v1/accounts/{id}     account by ID (hex)
//	GET /v1/devices/{id}      account holding device ID (hex)
//	GET /v1/usernames/{name}  account holding username (?account={id}: whether that account holds it)
//	GET /v1/devices/{id}/key  device's current signed messaging key
func (s *Service) Routes(h Handler) error {
	routes := map[string]http.HandlerFunc{
		"GET /v1/accounts/{id}":    s.httpAccount,
		"GET /v1/devices/{id}":     s.httpDevice,
		"GET /v1/usernames/{name}": s.httpUsername,
	}
	for p, f := range routes {
		if err := h.Handle(p, f); err != nil {
			return err
		}
	}
	return s.keyRoutes(h)
}

func (s *Service) httpAccount(w http.ResponseWriter, r *http.Request) {
	id, err := e2ee.ParseAccountID(r.PathValue("id"))
	if err != nil {
		writeError(w, kind(ErrMalformed, err))
		return
	}
	a, err := s.LookupAccount(r.Context(), id)
	writeAccount(w, a, err)
}

func (s *Service) httpDevice(w http.ResponseWriter, r *http.Request) {
	id, err := e2ee.ParseDeviceID(r.PathValue("id"))
	if err != nil {
		writeError(w, kind(ErrMalformed, err))
		return
	}
	a, _, err := s.LookupDevice(r.Context(), id)
	writeAccount(w, a, err)
}

func (s *Service) httpUsername(w http.ResponseWriter, r *http.Request) {
	a, err := s.lookupUsernameFor(r.Context(), r.PathValue("name"), r.URL.Query().Get("account"))
	writeAccount(w, a, err)
}

func writeAccount(w http.ResponseWriter, a *Account, err error) {
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, a.ToJSON())
}

// HTTPStatus returns the HTTP status of a directory error.
func HTTPStatus(err error) int {
	switch CodeOf(err) {
	case CodeNotFound:
		return http.StatusNotFound
	case CodeUnavailable:
		return http.StatusServiceUnavailable
	case CodeInternal:
		if errors.Is(err, context.DeadlineExceeded) {
			return http.StatusGatewayTimeout
		}
		return http.StatusInternalServerError
	case CodeRollback, CodeFork, CodeUsernameTaken, CodeUsernameLost, CodeExists:
		return http.StatusConflict
	case CodeDeviceRevoked:
		return http.StatusGone
	case CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusBadRequest
}

func writeError(w http.ResponseWriter, err error) {
	c := CodeOf(err)
	writeJSON(w, HTTPStatus(err), map[string]ErrorJSON{"error": {Code: c, Reason: c.Reason(), Message: err.Error()}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
