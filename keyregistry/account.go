package keyregistry

import (
	"bytes"
	"cmp"
	"errors"
	"slices"
	"time"

	"github.com/iagon/gridchat/e2ee"
)

// Device is one device of an account as its chain states it.
type Device struct {
	// ID is the device ID, derived from Public.Signing.
	ID e2ee.DeviceID
	// Public holds the device's signing key and registration messaging key.
	Public e2ee.DevicePublic
	// Added is the sequence number of the statement that added the device.
	Added uint64
	// Revoked is true once a later statement revoked the device.
	Revoked bool
	// RevokedAt is the sequence number of the revoking statement, if Revoked.
	RevokedAt uint64
}

// Account is a verified view of an account: what its chain says after a
// replay, and the record it came in.
type Account struct {
	// ID is the account ID (hash of the genesis statement).
	ID e2ee.AccountID
	// Length is the number of statements in the chain.
	Length uint64
	// Head is the hash of the last statement.
	Head [32]byte
	// Devices lists every device the chain ever added, in order of addition,
	// with revoked ones marked.
	Devices []Device
	// Profile is the account's current public profile.
	Profile e2ee.Profile
	// Username is the account's current username, or "".
	Username string
	// UsernameAt is the time of the latest set-username statement that set
	// Username (the claim's renewal time).
	UsernameAt time.Time
	// Record is the encoded directory record, for clients that replay the
	// chain themselves (they should).
	Record []byte
}

// Device returns the device with the given ID.
func (a *Account) Device(id e2ee.DeviceID) (Device, bool) {
	for _, d := range a.Devices {
		if d.ID == id {
			return d, true
		}
	}
	return Device{}, false
}

// CurrentDevices returns the devices that are not revoked.
func (a *Account) CurrentDevices() []Device {
	var out []Device
	for _, d := range a.Devices {
		if !d.Revoked {
			out = append(out, d)
		}
	}
	return out
}

// held is an opened directory record: decoded, chain replayed. It is
// immutable once built.
type held struct {
	acct  *Account
	rec   *Record
	raw   []byte
	chain *e2ee.Chain
	state *e2ee.AccountState
	last  time.Time // time of the last statement
	claim claim     // order of its username claim (claim.go); set by the verifier
}

// relate returns how newer stands to older (e2ee.Compare on replayed chains).
func relate(older, newer *held) e2ee.Relation { return e2ee.Compare(older.chain, newer.chain) }

// betterSame reports whether b should replace a when both hold the same
// chain: the one with more receipts wins, then the smaller encoding (a stable
// rule).
func betterSame(a, b *held) bool {
	if len(b.rec.Receipts) != len(a.rec.Receipts) {
		return len(b.rec.Receipts) > len(a.rec.Receipts)
	}
	return bytes.Compare(b.raw, a.raw) < 0
}

// replayRecord decodes and replays rec's chain and builds the Account view.
// Chain failures map onto the directory's sentinels.
func replayRecord(rec *Record) (*held, error) {
	c, err := e2ee.DecodeChain(rec.Chain)
	if err != nil {
		return nil, chainFailure(err)
	}
	st, err := e2ee.Replay(c)
	if err != nil {
		return nil, chainFailure(err)
	}
	a := &Account{ID: st.Account, Length: st.Seq + 1, Head: st.Head, Username: st.Username, Profile: st.Profile}
	for _, d := range st.Devices {
		a.Devices = append(a.Devices, Device{ID: d.ID, Public: d.Public, Added: d.AddedAt})
	}
	for _, d := range st.Revoked {
		a.Devices = append(a.Devices, Device{ID: d.ID, Public: d.Public, Added: d.AddedAt, Revoked: true, RevokedAt: d.RevokedAt})
	}
	slices.SortFunc(a.Devices, func(x, y Device) int { return cmp.Compare(x.Added, y.Added) })
	stmts := c.Statements()
	if a.Username != "" {
		// The claim's time is the latest set-username statement, which sets
		// the current name by definition.
		for i := len(stmts) - 1; i >= 0; i-- {
			if stmts[i].Kind == e2ee.KindSetUsername {
				a.UsernameAt = stmts[i].Time
				break
			}
		}
	}
	return &held{acct: a, rec: rec, chain: c, state: st, last: stmts[len(stmts)-1].Time}, nil
}

// chainFailure maps an e2ee decode or replay error to a directory sentinel.
func chainFailure(err error) error {
	var ce *e2ee.ChainError
	if errors.As(err, &ce) {
		switch ce.Reason {
		case e2ee.ReasonBadSignature, e2ee.ReasonBadDeviceCert:
			return kind(ErrBadSignature, err)
		case e2ee.ReasonSignerRevoked, e2ee.ReasonSignerNotCurrent:
			return kind(ErrRevokedSigner, err)
		case e2ee.ReasonMalformed:
			return kind(ErrMalformed, err)
		case e2ee.ReasonTooLong:
			return kind(ErrTooLarge, err)
		}
		return kind(ErrInvalidChain, err)
	}
	if errors.Is(err, e2ee.ErrMalformed) || errors.Is(err, e2ee.ErrUnsupported) {
		return kind(ErrMalformed, err)
	}
	return kind(ErrInvalidChain, err)
}
