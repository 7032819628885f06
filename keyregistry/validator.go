package keyregistry

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	record "github.com/libp2p/go-libp2p-record"

	"github.com/iagon/gridchat/chain"
	"github.com/iagon/gridchat/e2ee"
)

// Directory namespaces in the grid's DHT. Keys are "/" + namespace + "/" +
// rest, where rest is a lowercase hex ID or a normalized username.
const (
	NSAccount  = "gcacct"
	NSUsername = "gcname"
	NSDevice   = "gcdev"
)

// AccountKey returns the DHT key of an account's record.
func AccountKey(id e2ee.AccountID) string { return "/" + NSAccount + "/" + id.String() }

// DeviceKey returns the DHT key of a device's index record.
func DeviceKey(id e2ee.DeviceID) string { return "/" + NSDevice + "/" + id.String() }

// UsernameKey returns the DHT key of a normalized username's record.
func UsernameKey(name string) string { return "/" + NSUsername + "/" + name }

// ValidatorConfig configures the directory's record validators.
type ValidatorConfig struct {
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// UsernameLifetime is how long a username claim lives after the
	// set-username statement that last set (renewed) it. Default
	// DefaultUsernameLifetime.
	UsernameLifetime time.Duration
	// MaxClockSkew is how far in the future a statement time may lie.
	// Default DefaultMaxClockSkew.
	MaxClockSkew time.Duration
	// Receipts, when set, verifies every receipt a record carries against
	// its statement (chain.Policy or a log satisfies it); a receipt that
	// does not verify makes the record invalid. Nil checks receipts' shape
	// only.
	Receipts ReceiptVerifier
	// RequireReceipts makes a record invalid unless every device-key
	// statement (genesis, add-device, revoke-device) has a receipt, so a
	// key that was never published cannot be served. It needs Receipts.
	RequireReceipts bool
}

// ReceiptVerifier checks a publication-log receipt offline.
type ReceiptVerifier interface {
	Verify(rc *chain.Receipt, r chain.Record) (chain.Checkpoint, error)
}

// Defaults of ValidatorConfig.
const (
	DefaultUsernameLifetime = 90 * 24 * time.Hour
	DefaultMaxClockSkew     = 5 * time.Minute
)

func (c ValidatorConfig) withDefaults() ValidatorConfig {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.UsernameLifetime <= 0 {
		c.UsernameLifetime = DefaultUsernameLifetime
	}
	if c.MaxClockSkew <= 0 {
		c.MaxClockSkew = DefaultMaxClockSkew
	}
	return c
}

// verifier opens directory records: strict decode, then a full replay of the
// chain. It is safe for concurrent use.
type verifier struct {
	cfg   ValidatorConfig
	codec codec
}

func newVerifier(cfg ValidatorConfig) *verifier {
	return &verifier{cfg: cfg.withDefaults(), codec: newCodec()}
}

// open decodes raw and replays its chain. Every error wraps a sentinel.
func (v *verifier) open(raw []byte) (*held, error) { return v.openWith(raw, v.cfg.RequireReceipts) }

// openWith is open, requiring receipts for device-key statements only if
// require is set (a client's submission has none yet).
func (v *verifier) openWith(raw []byte, require bool) (*held, error) {
	rec, err := v.codec.unmarshal(raw)
	if err != nil {
		return nil, err
	}
	h, err := replayRecord(rec)
	if err != nil {
		return nil, err
	}
	h.raw = raw
	if last := h.last; last.After(v.cfg.Now().Add(v.cfg.MaxClockSkew)) {
		return nil, fmt.Errorf("%w: statement time %s is in the future", ErrInvalidChain, last.Format(time.RFC3339))
	}
	for _, rc := range rec.Receipts {
		if rc.Seq >= h.acct.Length {
			return nil, fmt.Errorf("%w: receipt for seq %d of a chain of %d", ErrMalformed, rc.Seq, h.acct.Length)
		}
	}
	witnessed, err := v.checkReceipts(h, require)
	if err != nil {
		return nil, err
	}
	h.claim = claimOf(h, witnessed, v.cfg.UsernameLifetime)
	h.acct.Record = raw
	return h, nil
}

// checkReceipts verifies h's receipts against its statements, and that the
// device-key statements have one, as configured. It returns the witnessed
// time of each verified receipt's checkpoint (chain.Checkpoint.Witnessed),
// by statement sequence; nil when receipts are not verified, since an
// unverified receipt's times prove nothing.
func (v *verifier) checkReceipts(h *held, require bool) (map[uint64]time.Time, error) {
	if v.cfg.Receipts == nil {
		return nil, nil
	}
	stmts := h.chain.Statements()
	acct := chain.DeriveAccountKey(stmts[0].Encode())
	var witnessed map[uint64]time.Time
	for _, r := range h.rec.Receipts {
		rc, err := chain.ParseReceipt(r.Body)
		if err != nil {
			return nil, fmt.Errorf("%w: receipt of statement %d: %v", ErrBadProof, r.Seq, err)
		}
		cp, err := v.cfg.Receipts.Verify(rc, chain.Record{Account: acct, Seq: r.Seq, Body: stmts[r.Seq].Encode()})
		if err != nil {
			return nil, fmt.Errorf("%w: receipt of statement %d: %v", ErrBadProof, r.Seq, err)
		}
		if !cp.Witnessed.IsZero() {
			if witnessed == nil {
				witnessed = make(map[uint64]time.Time, len(h.rec.Receipts))
			}
			witnessed[r.Seq] = cp.Witnessed
		}
	}
	if require {
		for _, s := range stmts {
			switch s.Kind {
			case e2ee.KindGenesis, e2ee.KindAddDevice, e2ee.KindRevokeDevice:
				if h.rec.receiptFor(s.Seq) == nil {
					return nil, fmt.Errorf("%w: statement %d (%s) was never published", ErrBadProof, s.Seq, s.Kind)
				}
			}
		}
	}
	return witnessed, nil
}

// usernameLive reports whether h's username claim is live now.
func (v *verifier) usernameLive(h *held) bool {
	a := h.acct
	return a.Username != "" && v.cfg.Now().Before(a.UsernameAt.Add(v.cfg.UsernameLifetime))
}

// Validators returns the record validators of the directory's namespaces,
// keyed by namespace, for the grid's DHT (dht.Config.Validators).
func Validators(cfg ValidatorConfig) map[string]record.Validator {
	v := newVerifier(cfg)
	return map[string]record.Validator{
		NSAccount:  accountValidator{v},
		NSDevice:   deviceValidator{v},
		NSUsername: usernameValidator{v, newReleaseMemory(v.cfg.Now, v.cfg.UsernameLifetime)},
		NSKey:      keyValidator{v},
	}
}

// parseKey splits "/ns/rest" and checks ns.
func parseKey(key, ns string) (string, error) {
	gotNS, rest, err := record.SplitKey(key)
	if err != nil || gotNS != ns || rest == "" || strings.Contains(rest, "/") {
		return "", fmt.Errorf("%w: key %q is not in namespace %s", ErrMalformed, key, ns)
	}
	return rest, nil
}

func parseHexID(s string) ([32]byte, error) {
	var id [32]byte
	// Only the canonical lowercase form is a valid key, so one ID has one key.
	if len(s) != 64 || strings.ToLower(s) != s {
		return id, fmt.Errorf("%w: ID %q is not 64 lowercase hex digits", ErrMalformed, s)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("%w: ID %q: %v", ErrMalformed, s, err)
	}
	return id, nil
}

// accountValidator checks /gcacct/<account id> records: the chain replays and
// its genesis hashes to the key's account ID.
type accountValidator struct{ v *verifier }

func (a accountValidator) open(key string, value []byte) (*held, error) {
	rest, err := parseKey(key, NSAccount)
	if err != nil {
		return nil, err
	}
	id, err := parseHexID(rest)
	if err != nil {
		return nil, err
	}
	h, err := a.v.open(value)
	if err != nil {
		return nil, err
	}
	if h.acct.ID != e2ee.AccountID(id) {
		return nil, fmt.Errorf("%w: record of account %s under key of %s", ErrAccountMismatch, h.acct.ID, rest)
	}
	return h, nil
}

// Validate implements record.Validator.
func (a accountValidator) Validate(key string, value []byte) error {
	_, err := a.open(key, value)
	return err
}

// Select implements record.Validator: see selectChain.
func (a accountValidator) Select(key string, values [][]byte) (int, error) {
	return selectChain(key, values, a.open, nil)
}

// deviceValidator checks /gcdev/<device id> records: the chain replays and
// adds the device (it may have revoked it since).
type deviceValidator struct{ v *verifier }

func (d deviceValidator) open(key string, value []byte) (*held, error) {
	rest, err := parseKey(key, NSDevice)
	if err != nil {
		return nil, err
	}
	id, err := parseHexID(rest)
	if err != nil {
		return nil, err
	}
	h, err := d.v.open(value)
	if err != nil {
		return nil, err
	}
	if _, ok := h.acct.Device(e2ee.DeviceID(id)); !ok {
		return nil, fmt.Errorf("%w: account %s has no device %s", ErrAccountMismatch, h.acct.ID, rest)
	}
	return h, nil
}

// Validate implements record.Validator.
func (d deviceValidator) Validate(key string, value []byte) error {
	_, err := d.open(key, value)
	return err
}

// Select implements record.Validator: see selectChain. A device ID is bound
// to its signing key and each add-device statement carries the device's own
// certificate for one account, so two accounts can only both name a device
// if its key signed for both; the first record held stays.
func (d deviceValidator) Select(key string, values [][]byte) (int, error) {
	return selectChain(key, values, d.open, nil)
}

// usernameValidator checks /gcname/<username> records. A record is valid
// under a name in two ways (docs/PROTOCOL.md §5, "Usernames"):
//
//   - a claim: the chain replays, its current username is the key's name,
//     and the claim is live (its latest set-username statement for the name
//     is younger than the claim lifetime);
//   - a release: the chain replays, once set the key's name but names
//     another since, and its latest set-username statement for the name is
//     younger than the claim lifetime (so an older claim record of the
//     account could still be live somewhere; the release supersedes it,
//     being a longer chain of the same account).
//
// A chain that never set the name is invalid under it.
//
// The validators of a node's DHT (Validators) also remember the releases
// they have validated (seen): a claim record of an account whose release
// of the name this node has seen with a longer chain holds nothing in
// Select, even when the release is not among the values. A peer keeps one
// record per key, so without this, once another account's claim replaced
// the release there, a replayed copy of the stale claim would win again.
type usernameValidator struct {
	v    *verifier
	seen *releaseMemory // nil: none
}

func (u usernameValidator) open(key string, value []byte) (*held, error) {
	name, err := parseKey(key, NSUsername)
	if err != nil {
		return nil, err
	}
	if !isNormalUsername(name) {
		return nil, fmt.Errorf("%w: %q", ErrUsernameInvalid, name)
	}
	h, err := u.v.open(value)
	if err != nil {
		return nil, err
	}
	if h.acct.Username == name {
		if !u.v.usernameLive(h) {
			return nil, fmt.Errorf("%w: %q claimed at %s", ErrUsernameLapsed, name, h.acct.UsernameAt.Format(time.RFC3339))
		}
		return h, nil
	}
	at, ok := lastSet(h, name)
	if !ok {
		return nil, fmt.Errorf("%w: account %s never claimed %q", ErrAccountMismatch, h.acct.ID, name)
	}
	if !u.v.releaseLive(at) {
		return nil, fmt.Errorf("%w: %q released, last claimed at %s", ErrUsernameLapsed, name, at.Format(time.RFC3339))
	}
	u.seen.note(name, h.acct.ID, h.acct.Length, at)
	return h, nil
}

// holds reports whether h, opened under name's key, is a live claim of the
// name that no release seen by this validator supersedes.
func (u usernameValidator) holds(name string, h *held) bool {
	return h.acct.Username == name && !u.seen.supersedes(u.v, name, h)
}

// releaseMemorySize caps the releases a node's name validator remembers.
const releaseMemorySize = 16384

// releaseMemory remembers, per name and account, the longest release seen:
// its chain length and the time its chain last set the name (a release is
// needed only while that is younger than the claim lifetime). It is safe
// for concurrent use.
type releaseMemory struct {
	c *lru[releaseKey, releaseSeen]
}

type releaseKey struct {
	name string
	id   e2ee.AccountID
}

type releaseSeen struct {
	length uint64
	at     time.Time
}

func newReleaseMemory(now func() time.Time, lifetime time.Duration) *releaseMemory {
	return &releaseMemory{c: newLRU[releaseKey, releaseSeen](releaseMemorySize, lifetime, now)}
}

// note remembers a release of name by account id with a chain of length
// statements, last setting the name at at.
func (m *releaseMemory) note(name string, id e2ee.AccountID, length uint64, at time.Time) {
	if m == nil {
		return
	}
	m.c.update(releaseKey{name, id}, func(old releaseSeen, had bool) (releaseSeen, bool) {
		if had && old.length >= length {
			return old, false
		}
		return releaseSeen{length: length, at: at}, true
	})
}

// supersedes reports whether a live release of name seen by this node has
// a longer chain than h's account: h, a shorter chain of that account, is
// then a claim the account has left (or a fork of its own chain, which
// holds nothing either).
func (m *releaseMemory) supersedes(v *verifier, name string, h *held) bool {
	if m == nil {
		return false
	}
	r, ok := m.c.peek(releaseKey{name, h.acct.ID})
	return ok && r.length > h.acct.Length && v.releaseLive(r.at)
}

// lastSet returns the time of h's latest set-username statement for name,
// and whether there is one.
func lastSet(h *held, name string) (time.Time, bool) {
	stmts := h.chain.Statements()
	for i := len(stmts) - 1; i >= 0; i-- {
		if b, ok := stmts[i].Body.(*e2ee.SetUsername); ok && b.Username == name {
			return stmts[i].Time, true
		}
	}
	return time.Time{}, false
}

// releaseLive reports whether a release of a name last set at at is still
// needed: a claim record made by that statement or before it could still be
// live.
func (v *verifier) releaseLive(at time.Time) bool {
	return v.cfg.Now().Before(at.Add(v.cfg.UsernameLifetime))
}

// released returns the names h's chain has left whose release is still
// live (see usernameValidator), in the order the chain last set them.
func (v *verifier) released(h *held) []string {
	var out []string
	seen := map[string]bool{h.acct.Username: true}
	stmts := h.chain.Statements()
	for i := len(stmts) - 1; i >= 0; i-- {
		b, ok := stmts[i].Body.(*e2ee.SetUsername)
		if !ok || seen[b.Username] {
			continue
		}
		seen[b.Username] = true
		if isNormalUsername(b.Username) && v.releaseLive(stmts[i].Time) {
			out = append(out, b.Username)
		}
	}
	return out
}

// Validate implements record.Validator.
func (u usernameValidator) Validate(key string, value []byte) error {
	_, err := u.open(key, value)
	return err
}

// Select implements record.Validator. Records of one account follow
// selectChain (rollbacks lose, forks fail), so an account's release of the
// name supersedes its older claim records. Across accounts the order is
// compareHolders': live claims (holds) by compareClaims, then the rest.
// Every node picks the same record from any set of values, in any order,
// and the grid converges on one owner of the name.
func (u usernameValidator) Select(key string, values [][]byte) (int, error) {
	name, _ := parseKey(key, NSUsername) // an invalid key fails every open
	return selectChain(key, values, u.open, func(a, b *held) int {
		return compareHolders(a, u.holds(name, a), b, u.holds(name, b))
	})
}

// selectChain picks the best of values: invalid values lose; of two chains
// of one account the one that extends the other wins; equal chains prefer
// more receipts. Two chains of one account that fork make Select fail with
// ErrFork, so a node never replaces what it holds by a fork. Chains of
// different accounts fail with ErrAccountMismatch if across is nil;
// otherwise the best chain of each account is found first, and of those the
// one across orders first wins (the result does not depend on the order of
// values).
func selectChain(key string, values [][]byte, open func(string, []byte) (*held, error), across func(a, b *held) int) (int, error) {
	type best struct {
		i int
		h *held
	}
	var per []best // best record of each account, in order of first appearance
	var firstErr error
	for i, val := range values {
		h, err := open(key, val)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		j := 0
		for j < len(per) && per[j].h.acct.ID != h.acct.ID {
			j++
		}
		if j == len(per) {
			if len(per) > 0 && across == nil {
				return 0, fmt.Errorf("keyregistry: select %s: %w: accounts %s and %s", key, ErrAccountMismatch, per[0].h.acct.ID, h.acct.ID)
			}
			per = append(per, best{i, h})
			continue
		}
		bh := per[j].h
		switch relate(bh, h) {
		case e2ee.Extends:
			per[j] = best{i, h}
		case e2ee.Same:
			if betterSame(bh, h) {
				per[j] = best{i, h}
			}
		case e2ee.RolledBack:
		default:
			return 0, fmt.Errorf("keyregistry: select %s: %w at length %d/%d", key, ErrFork, bh.acct.Length, h.acct.Length)
		}
	}
	if len(per) == 0 {
		return 0, fmt.Errorf("keyregistry: select %s: no valid record: %w", key, errors.Join(firstErr))
	}
	win := per[0]
	for _, b := range per[1:] {
		if across(b.h, win.h) < 0 {
			win = b
		}
	}
	return win.i, nil
}
