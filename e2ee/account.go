package e2ee

import (
	"bytes"
	"maps"
	"slices"
	"time"

	"github.com/iagon/gridchat/e2ee/internal/frame"
)

// AccountState is an account's state after replaying its sigchain.
type AccountState struct {
	Account  AccountID
	Seq      uint64   // sequence number of the last statement
	Head     [32]byte // hash of the last statement
	Devices  []DeviceState
	Revoked  []RevokedDevice
	Username string
	Profile  Profile
	Social   []SocialLink // one per provider, sorted by provider
}

// DeviceState is a current device of an account.
type DeviceState struct {
	ID      DeviceID
	Public  DevicePublic
	AddedAt uint64 // sequence number of the statement that added it
	Added   time.Time
}

// RevokedDevice is a device revoked from an account.
type RevokedDevice struct {
	DeviceState
	RevokedAt uint64 // sequence number of the revoking statement
}

// Device returns the current device id.
func (s *AccountState) Device(id DeviceID) (DeviceState, bool) {
	for _, d := range s.Devices {
		if d.ID == id {
			return d, true
		}
	}
	return DeviceState{}, false
}

// SenderKey returns the public keys of id if it is a current device, ErrRevoked if it was revoked, and
// ErrUnknownSender otherwise. Use it to pick the key that Open and NewReceiver verify against.
func (s *AccountState) SenderKey(id DeviceID) (DevicePublic, error) {
	if d, ok := s.Device(id); ok {
		return d.Public, nil
	}
	for _, d := range s.Revoked {
		if d.ID == id {
			return DevicePublic{}, errorf("sender key", ErrRevoked, "device %s revoked at statement %d", id, d.RevokedAt)
		}
	}
	return DevicePublic{}, errorf("sender key", ErrUnknownSender, "device %s not in account %s", id, s.Account)
}

// Replay verifies every statement of c in order and returns the account's current state. The error, if any,
// is a *ChainError naming the first refused statement.
func Replay(c *Chain) (*AccountState, error) {
	st, err := replay(c.stmts)
	if err != nil {
		return nil, err
	}
	return st.snapshot(), nil
}

type replayState struct {
	account  AccountID
	head     [32]byte
	seq      uint64
	last     time.Time
	current  map[DeviceID]*DeviceState
	revoked  map[DeviceID]*RevokedDevice
	username string
	profile  Profile
	social   map[string]SocialLink
}

func replay(stmts []*Statement) (*replayState, error) {
	if len(stmts) == 0 {
		return nil, chainErr(0, ReasonEmpty, "")
	}
	if len(stmts) > MaxChainStatements {
		return nil, chainErr(MaxChainStatements, ReasonTooLong, "")
	}
	st := &replayState{}
	for i, s := range stmts {
		if err := st.apply(i, s); err != nil {
			return nil, err
		}
	}
	return st, nil
}

func (st *replayState) clone() *replayState {
	c := *st
	c.current = maps.Clone(st.current)
	c.revoked = maps.Clone(st.revoked)
	c.social = maps.Clone(st.social)
	return &c
}

// apply checks statement s at index i against the state and, only if every check passes, applies it. Checks
// run structure first (kind, sequence, link, time), then the signer, then the signature, then the body, so the
// reason names the most specific fault.
func (st *replayState) apply(i int, s *Statement) *ChainError {
	// Fields and encoding must agree: the signature is checked over the encoding, the state is built from the
	// fields.
	if tr, err := s.transcript(); err != nil || len(s.raw) != len(tr)+signatureSize ||
		!bytes.Equal(tr, s.raw[:len(tr)]) || !bytes.Equal(s.Sig, s.raw[len(tr):]) {
		return chainErr(i, ReasonMalformed, "statement fields differ from its encoding")
	}
	if i == 0 {
		return st.applyGenesis(s)
	}
	if s.Kind == KindGenesis {
		return chainErr(i, ReasonBadGenesis, "genesis statement at index %d", i)
	}
	if s.Seq != uint64(i) {
		return chainErr(i, ReasonBadSequence, "sequence %d at index %d", s.Seq, i)
	}
	if s.Prev != st.head {
		return chainErr(i, ReasonBrokenLink, "")
	}
	if s.Time.Before(st.last) {
		return chainErr(i, ReasonBadTime, "%s before %s", s.Time, st.last)
	}
	signer, ok := st.current[s.Signer]
	if !ok {
		if r, ok := st.revoked[s.Signer]; ok {
			return chainErr(i, ReasonSignerRevoked, "device %s revoked at statement %d", s.Signer, r.RevokedAt)
		}
		return chainErr(i, ReasonSignerNotCurrent, "device %s", s.Signer)
	}
	tr := s.raw[:len(s.raw)-signatureSize]
	if !verifySig(signer.Public.Signing, s.Kind.context(), tr, s.Sig) {
		return chainErr(i, ReasonBadSignature, "signer %s", s.Signer)
	}
	switch b := s.Body.(type) {
	case *AddDevice:
		c := b.Cert
		if c.Account != st.account {
			return chainErr(i, ReasonBadDeviceCert, "certificate for account %s", c.Account)
		}
		if err := c.Verify(); err != nil {
			return chainErr(i, ReasonBadDeviceCert, "%v", err)
		}
		id := c.Device.ID()
		if _, ok := st.current[id]; ok {
			return chainErr(i, ReasonDuplicateDevice, "device %s", id)
		}
		if _, ok := st.revoked[id]; ok {
			return chainErr(i, ReasonDuplicateDevice, "device %s was revoked", id)
		}
		st.current[id] = &DeviceState{ID: id, Public: c.Device, AddedAt: s.Seq, Added: s.Time}
	case *RevokeDevice:
		d, ok := st.current[b.Device]
		if !ok {
			return chainErr(i, ReasonUnknownDevice, "device %s", b.Device)
		}
		if len(st.current) == 1 {
			return chainErr(i, ReasonLastDevice, "device %s", b.Device)
		}
		delete(st.current, b.Device)
		st.revoked[b.Device] = &RevokedDevice{DeviceState: *d, RevokedAt: s.Seq}
	case *SetUsername:
		st.username = b.Username
	case *SetProfile:
		st.profile = b.Profile
	case *LinkSocial:
		if b.Link.Subject == "" {
			delete(st.social, b.Link.Provider)
		} else {
			st.social[b.Link.Provider] = b.Link
		}
	default:
		return chainErr(i, ReasonMalformed, "body %T", s.Body)
	}
	st.head, st.seq, st.last = s.Hash(), s.Seq, s.Time
	return nil
}

func (st *replayState) applyGenesis(s *Statement) *ChainError {
	g, ok := s.Body.(*Genesis)
	if !ok || s.Kind != KindGenesis {
		return chainErr(0, ReasonBadGenesis, "first statement is %s", s.Kind)
	}
	if s.Seq != 0 {
		return chainErr(0, ReasonBadSequence, "genesis sequence %d", s.Seq)
	}
	if s.Prev != ([32]byte{}) {
		return chainErr(0, ReasonBrokenLink, "genesis with a previous hash")
	}
	id := g.Device.ID()
	if s.Signer != id {
		return chainErr(0, ReasonBadGenesis, "genesis signed by %s, not its device %s", s.Signer, id)
	}
	if !verifySig(g.Device.Signing, s.Kind.context(), s.raw[:len(s.raw)-signatureSize], s.Sig) {
		return chainErr(0, ReasonBadSignature, "genesis")
	}
	st.account = AccountID(frame.Hash(labelAccountID, s.raw))
	st.current = map[DeviceID]*DeviceState{id: {ID: id, Public: g.Device, AddedAt: 0, Added: s.Time}}
	st.revoked = map[DeviceID]*RevokedDevice{}
	st.social = map[string]SocialLink{}
	st.head, st.seq, st.last = s.Hash(), 0, s.Time
	return nil
}

func (st *replayState) snapshot() *AccountState {
	a := &AccountState{Account: st.account, Seq: st.seq, Head: st.head, Username: st.username, Profile: st.profile}
	for _, d := range st.current {
		a.Devices = append(a.Devices, *d)
	}
	slices.SortFunc(a.Devices, func(x, y DeviceState) int { return cmpSeq(x.AddedAt, y.AddedAt) })
	for _, d := range st.revoked {
		a.Revoked = append(a.Revoked, *d)
	}
	slices.SortFunc(a.Revoked, func(x, y RevokedDevice) int { return cmpSeq(x.AddedAt, y.AddedAt) })
	for _, p := range slices.Sorted(maps.Keys(st.social)) {
		a.Social = append(a.Social, st.social[p])
	}
	return a
}

func cmpSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
