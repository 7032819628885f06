package keyregistry

import (
	"context"
	"fmt"
	"time"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/gateway"
	"github.com/iagon/gridchat/wire"
)

// WebSocket operations of the directory (docs/PROTOCOL.md §7). All run
// before authentication: registration creates the identity, an append is
// signed by the account's own devices, and lookups are public.
const (
	OpNonce    = "directory.nonce"
	OpRegister = "directory.register"
	OpAppend   = "directory.append"
	OpAccount  = "directory.account"
	OpDevice   = "directory.device"
	OpUsername = "directory.username"
)

// NonceRequest asks for a registration nonce. Device, the new device's
// encoded public keys (e2ee DevicePublic), makes the grant carry the key
// challenge that registration requires.
type NonceRequest struct {
	Device []byte `json:"device,omitempty"`
}

// NonceResponse is a registration nonce, its expiry and the key challenge
// sealed to the device's messaging key.
type NonceResponse struct {
	Nonce     []byte    `json:"nonce"`
	Expires   time.Time `json:"expires"`
	Challenge []byte    `json:"challenge,omitempty"`
}

// RegisterBody registers a first device: the genesis chain, the
// registration proof over the nonce and the answer to the key challenge.
type RegisterBody struct {
	Nonce  []byte `json:"nonce"`
	Chain  []byte `json:"chain"`
	Proof  []byte `json:"proof"`
	Answer []byte `json:"answer"`
}

// AppendBody submits a new version of an account's chain.
type AppendBody struct {
	Chain []byte `json:"chain"`
}

// AccountQuery names an account by ID (hex).
type AccountQuery struct {
	Account string `json:"account"`
}

// DeviceQuery names a device by ID (hex).
type DeviceQuery struct {
	Device string `json:"device"`
}

// UsernameQuery names a username (normalized by the directory). Account,
// if set (hex), asks whether that account holds the name (Service.UsernameOf):
// the answer is the account, or an error such as directory_username_lost
// when its claim lost to another account's earlier claim.
type UsernameQuery struct {
	Username string `json:"username"`
	Account  string `json:"account,omitempty"`
}

// OpRegistry is where the directory registers its WebSocket operations
// (*gateway.Hub satisfies it).
type OpRegistry interface {
	Handle(op string, fn gateway.Handler, opts ...gateway.HandleOption) error
	OnConnClosed(f func(connID string))
}

// RegisterOps adds the directory's operations to the gateway's WebSocket API
// and forgets a connection's nonces when it closes.
func (s *Service) RegisterOps(r OpRegistry) error {
	ops := map[string]gateway.Handler{
		OpNonce:    s.opNonce,
		OpRegister: s.opRegister,
		OpAppend:   s.opAppend,
		OpAccount:  s.opAccount,
		OpDevice:   s.opDevice,
		OpUsername: s.opUsername,
	}
	for _, name := range []string{OpNonce, OpRegister, OpAppend, OpAccount, OpDevice, OpUsername} {
		if err := r.Handle(name, ops[name], gateway.AllowUnauthenticated()); err != nil {
			return fmt.Errorf("keyregistry: register op %s: %w", name, err)
		}
	}
	if err := s.registerKeyOps(r); err != nil {
		return err
	}
	r.OnConnClosed(s.ConnClosed)
	return nil
}

// WireError converts a directory error to the gateway's error frame: the
// directory's code and reason, and the error's text.
func WireError(err error) *wire.Error {
	c := CodeOf(err)
	return &wire.Error{Code: wire.Code(c), Reason: c.Reason(), Message: err.Error()}
}

func decodeBody(c *gateway.Call, v any) error {
	if err := wire.StrictUnmarshal(c.Body, v); err != nil {
		return WireError(opErr(c.Op, "", kind(ErrMalformed, err)))
	}
	return nil
}

func (s *Service) opNonce(_ context.Context, c *gateway.Call) (any, error) {
	var req NonceRequest
	if err := decodeBody(c, &req); err != nil {
		return nil, err
	}
	g, err := s.Nonce(c.ConnID, req.Device)
	if err != nil {
		return nil, WireError(err)
	}
	return NonceResponse{Nonce: g.Nonce[:], Expires: g.Expires.UTC(), Challenge: g.Challenge}, nil
}

func (s *Service) opRegister(ctx context.Context, c *gateway.Call) (any, error) {
	var req RegisterBody
	if err := decodeBody(c, &req); err != nil {
		return nil, err
	}
	if len(req.Nonce) != NonceSize {
		return nil, WireError(opErr("register", "", ErrNonceUnknown))
	}
	a, err := s.Register(ctx, c.ConnID, RegisterRequest{Nonce: Nonce(req.Nonce), Chain: req.Chain, Proof: req.Proof, Answer: req.Answer})
	if err != nil {
		return nil, WireError(err)
	}
	return a.ToJSON(), nil
}

func (s *Service) opAppend(ctx context.Context, c *gateway.Call) (any, error) {
	var req AppendBody
	if err := decodeBody(c, &req); err != nil {
		return nil, err
	}
	a, err := s.Append(ctx, req.Chain)
	if err != nil {
		return nil, WireError(err)
	}
	return a.ToJSON(), nil
}

func (s *Service) opAccount(ctx context.Context, c *gateway.Call) (any, error) {
	var req AccountQuery
	if err := decodeBody(c, &req); err != nil {
		return nil, err
	}
	id, err := parseHexID(req.Account)
	if err != nil {
		return nil, WireError(opErr("lookup account", "", err))
	}
	a, err := s.LookupAccount(ctx, e2ee.AccountID(id))
	if err != nil {
		return nil, WireError(err)
	}
	return a.ToJSON(), nil
}

func (s *Service) opDevice(ctx context.Context, c *gateway.Call) (any, error) {
	var req DeviceQuery
	if err := decodeBody(c, &req); err != nil {
		return nil, err
	}
	id, err := parseHexID(req.Device)
	if err != nil {
		return nil, WireError(opErr("lookup device", "", err))
	}
	a, _, err := s.LookupDevice(ctx, e2ee.DeviceID(id))
	if err != nil {
		return nil, WireError(err)
	}
	return a.ToJSON(), nil
}

func (s *Service) opUsername(ctx context.Context, c *gateway.Call) (any, error) {
	var req UsernameQuery
	if err := decodeBody(c, &req); err != nil {
		return nil, err
	}
	a, err := s.lookupUsernameFor(ctx, req.Username, req.Account)
	if err != nil {
		return nil, WireError(err)
	}
	return a.ToJSON(), nil
}

// lookupUsernameFor is LookupUsername, or UsernameOf when account (hex) is
// set.
func (s *Service) lookupUsernameFor(ctx context.Context, name, account string) (*Account, error) {
	if account == "" {
		return s.LookupUsername(ctx, name)
	}
	id, err := parseHexID(account)
	if err != nil {
		return nil, opErr("lookup username", "", err)
	}
	return s.UsernameOf(ctx, name, e2ee.AccountID(id))
}
