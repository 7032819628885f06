package client

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/iagon/gridchat/e2ee"
)

// GroupStatePurpose is the e2ee signed-request purpose of group-state records (signature context
// "gridchat/v1/req/group-state").
const GroupStatePurpose = "group-state"

// Group-state limits.
const (
	// MaxGroupMembers caps the members of a group.
	MaxGroupMembers = 256
	// MaxGroupName caps a group's name in bytes.
	MaxGroupName   = 128
	groupStateVers = 1
	labelGroupHash = "gridchat/v1/group-state-hash"
)

// Group-state errors.
var (
	// ErrNotAdmin means the signer of a group change is not an admin of the group.
	ErrNotAdmin = errors.New("client: not a group admin")
	// ErrBadGroupState means a group-state record does not decode, verify or follow the current one.
	ErrBadGroupState = errors.New("client: bad group-state record")
)

// GroupState is a group's membership as one admin-signed record: every change makes the next version, which
// names the hash of the previous one and is signed by a device of an admin of the previous version.
type GroupState struct {
	Conversation e2ee.ConversationID
	Version      uint64
	Prev         [32]byte // hash of the previous record; zero in version 1
	Name         string
	Members      []e2ee.AccountID // sorted
	Admins       []e2ee.AccountID // sorted, a subset of Members
	Signer       e2ee.AccountID
	Time         time.Time
}

// IsMember reports whether a is a member.
func (g *GroupState) IsMember(a e2ee.AccountID) bool {
	_, ok := slices.BinarySearchFunc(g.Members, a, cmpAccount)
	return ok
}

// IsAdmin reports whether a is an admin.
func (g *GroupState) IsAdmin(a e2ee.AccountID) bool {
	_, ok := slices.BinarySearchFunc(g.Admins, a, cmpAccount)
	return ok
}

func cmpAccount(a, b e2ee.AccountID) int { return bytes.Compare(a[:], b[:]) }

type groupBody struct {
	V       uint8    `cbor:"1,keyasint"`
	Conv    []byte   `cbor:"2,keyasint"`
	Version uint64   `cbor:"3,keyasint"`
	Prev    []byte   `cbor:"4,keyasint"`
	Name    string   `cbor:"5,keyasint"`
	Members [][]byte `cbor:"6,keyasint"`
	Admins  [][]byte `cbor:"7,keyasint"`
	Signer  []byte   `cbor:"8,keyasint"`
	TimeS   int64    `cbor:"9,keyasint"`
}

type signedGroup struct {
	Body    []byte `cbor:"1,keyasint"`
	Request []byte `cbor:"2,keyasint"` // e2ee.SignedRequest over Body, purpose GroupStatePurpose
}

func (g *GroupState) check() error {
	if g.Version == 0 || len(g.Name) > MaxGroupName || !utf8.ValidString(g.Name) ||
		len(g.Members) == 0 || len(g.Members) > MaxGroupMembers || len(g.Admins) == 0 {
		return fmt.Errorf("%w: version, name or member count", ErrBadGroupState)
	}
	if !slices.IsSortedFunc(g.Members, cmpAccount) || !slices.IsSortedFunc(g.Admins, cmpAccount) ||
		len(slices.CompactFunc(slices.Clone(g.Members), func(a, b e2ee.AccountID) bool { return a == b })) != len(g.Members) ||
		len(slices.CompactFunc(slices.Clone(g.Admins), func(a, b e2ee.AccountID) bool { return a == b })) != len(g.Admins) {
		return fmt.Errorf("%w: members or admins not sorted and distinct", ErrBadGroupState)
	}
	for _, a := range g.Admins {
		if !g.IsMember(a) {
			return fmt.Errorf("%w: admin %s is not a member", ErrBadGroupState, a)
		}
	}
	if (g.Version == 1) != (g.Prev == [32]byte{}) {
		return fmt.Errorf("%w: previous hash", ErrBadGroupState)
	}
	return nil
}

// signGroupState signs g with dev (a device of g.Signer) and returns the record.
func (c codec) signGroupState(dev *e2ee.DeviceKeys, g *GroupState) ([]byte, error) {
	if err := g.check(); err != nil {
		return nil, err
	}
	gb := groupBody{V: groupStateVers, Conv: g.Conversation[:], Version: g.Version, Prev: g.Prev[:], Name: g.Name,
		Signer: g.Signer[:], TimeS: g.Time.Unix()}
	for _, m := range g.Members {
		gb.Members = append(gb.Members, bytes.Clone(m[:]))
	}
	for _, m := range g.Admins {
		gb.Admins = append(gb.Admins, bytes.Clone(m[:]))
	}
	body, err := c.enc.Marshal(gb)
	if err != nil {
		return nil, fmt.Errorf("client: sign group state: %w", err)
	}
	req, err := e2ee.SignRequest(dev, GroupStatePurpose, body, g.Time)
	if err != nil {
		return nil, fmt.Errorf("client: sign group state: %w", err)
	}
	return c.enc.Marshal(signedGroup{Body: body, Request: req.Encode()})
}

// decodeGroupState decodes a record, without verifying its signature. It returns the state, the signed request
// and the signed body, as the bytes of rec (the signature is over those bytes, never over a re-encoding). It
// ignores the elective keys it does not know, in the record and in its body, after checking that their values
// are CBOR within the codec's limits, and refuses a must-understand key with an error naming it
// (docs/PROTOCOL.md §9.5 "Extensions").
func (c codec) decodeGroupState(rec []byte) (*GroupState, *e2ee.SignedRequest, []byte, error) {
	var sg signedGroup
	if len(rec) > maxGroupBytes {
		return nil, nil, nil, fmt.Errorf("%w: %d bytes", ErrBadGroupState, len(rec))
	}
	if _, err := c.decodeExtensible(c.groupRecordSchema, rec, &sg); err != nil {
		return nil, nil, nil, err
	}
	var gb groupBody
	if _, err := c.decodeExtensible(c.groupBodySchema, sg.Body, &gb); err != nil {
		return nil, nil, nil, err
	}
	if gb.V != groupStateVers || len(gb.Conv) != 32 || len(gb.Prev) != 32 || len(gb.Signer) != 32 ||
		len(gb.Members) > MaxGroupMembers || len(gb.Admins) > MaxGroupMembers {
		return nil, nil, nil, fmt.Errorf("%w: body fields", ErrBadGroupState)
	}
	g := &GroupState{Version: gb.Version, Name: gb.Name, Time: time.Unix(gb.TimeS, 0).UTC()}
	copy(g.Conversation[:], gb.Conv)
	copy(g.Prev[:], gb.Prev)
	copy(g.Signer[:], gb.Signer)
	for _, lists := range []struct {
		in  [][]byte
		out *[]e2ee.AccountID
	}{{gb.Members, &g.Members}, {gb.Admins, &g.Admins}} {
		for _, m := range lists.in {
			if len(m) != 32 {
				return nil, nil, nil, fmt.Errorf("%w: account ID of %d bytes", ErrBadGroupState, len(m))
			}
			*lists.out = append(*lists.out, e2ee.AccountID(m))
		}
	}
	if err := g.check(); err != nil {
		return nil, nil, nil, err
	}
	req, err := e2ee.DecodeSignedRequest(sg.Request)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: %v", ErrBadGroupState, err)
	}
	return g, req, sg.Body, nil
}

// groupHash is the hash the next version names as Prev: of the record's signed body alone, so that what the
// signature does not cover (the record's elective keys, its CBOR framing) cannot make two holders of one version
// disagree on its successor (docs/PROTOCOL.md §9.5).
func (c codec) groupHash(rec []byte) ([32]byte, error) {
	var sg signedGroup
	if _, err := c.decodeExtensible(c.groupRecordSchema, rec, &sg); err != nil {
		return [32]byte{}, err
	}
	h := sha256.New()
	h.Write([]byte(labelGroupHash))
	h.Write(sg.Body)
	return [32]byte(h.Sum(nil)), nil
}

// verifyGroupState checks that rec is a correctly signed successor of cur (or a valid version 1 when cur is
// nil): signed by a current device of its Signer account (signerState, from the replayed chain), and the
// signer is an admin of cur (for version 1: of the record itself).
func (c codec) verifyGroupState(rec []byte, cur *GroupState, curRec []byte, signerState *e2ee.AccountState) (*GroupState, error) {
	g, req, body, err := c.decodeGroupState(rec)
	if err != nil {
		return nil, err
	}
	if signerState.Account != g.Signer {
		return nil, fmt.Errorf("%w: signer account mismatch", ErrBadGroupState)
	}
	dev, err := signerState.SenderKey(req.Device)
	if err != nil {
		return nil, fmt.Errorf("%w: signer device: %v", ErrBadGroupState, err)
	}
	// Group records are verified long after they were made: freshness is checked against the record's own time.
	if err := req.Verify(dev, GroupStatePurpose, body, req.Time, e2ee.ClockSkew); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadGroupState, err)
	}
	if cur == nil {
		if g.Version != 1 || !g.IsAdmin(g.Signer) {
			return nil, fmt.Errorf("%w: first record must be version 1 signed by an admin", ErrBadGroupState)
		}
		return g, nil
	}
	prev, err := c.groupHash(curRec)
	if err != nil {
		return nil, fmt.Errorf("client: stored group state: %w", err)
	}
	if g.Conversation != cur.Conversation || g.Version != cur.Version+1 || g.Prev != prev {
		return nil, fmt.Errorf("%w: version %d does not follow version %d", ErrBadGroupState, g.Version, cur.Version)
	}
	if !cur.IsAdmin(g.Signer) {
		return nil, fmt.Errorf("%w: %s", ErrNotAdmin, g.Signer)
	}
	return g, nil
}
