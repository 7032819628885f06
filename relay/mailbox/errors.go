package mailbox

import (
	"errors"
	"fmt"
)

// Status is the stable numeric outcome of a mailbox request on the wire. Statuses are never renumbered.
type Status uint16

// Statuses of protocol version 1 (docs/PROTOCOL.md §5, "Mailboxes").
const (
	StatusOK           Status = 0  // done
	StatusMalformed    Status = 1  // the request is not a valid version-1 frame
	StatusTooLarge     Status = 2  // the envelope exceeds the size limit
	StatusSenderQuota  Status = 3  // the sender device has too many envelopes in this mailbox
	StatusMailboxFull  Status = 4  // the mailbox holds too many bytes
	StatusUnauthorized Status = 5  // the signed request does not verify for this device
	StatusReplay       Status = 6  // the signed request was seen before
	StatusStale        Status = 7  // the signed request is outside the freshness window
	StatusRevoked      Status = 8  // the device is revoked; its mailbox is gone
	StatusExpired      Status = 9  // the envelope is older than the TTL, or expired here already
	StatusBusy         Status = 10 // the replica is out of capacity; retry later
	StatusNotReplica   Status = 11 // the peer is not a replica of this mailbox
	StatusInternal     Status = 12 // the replica failed; retry later
)

// String returns the status's stable snake_case name.
func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusMalformed:
		return "malformed"
	case StatusTooLarge:
		return "too_large"
	case StatusSenderQuota:
		return "sender_quota"
	case StatusMailboxFull:
		return "mailbox_full"
	case StatusUnauthorized:
		return "unauthorized"
	case StatusReplay:
		return "replay"
	case StatusStale:
		return "stale"
	case StatusRevoked:
		return "revoked"
	case StatusExpired:
		return "expired"
	case StatusBusy:
		return "busy"
	case StatusNotReplica:
		return "not_replica"
	case StatusInternal:
		return "internal"
	}
	return "unknown"
}

// Error is a refusal with its status. Errors of this package that callers act on are *Error values; compare
// them with errors.Is against the sentinels below (same status).
type Error struct {
	Status  Status
	Message string
}

// Error implements error.
func (e *Error) Error() string {
	if e.Message == "" {
		return "mailbox: " + e.Status.String()
	}
	return "mailbox: " + e.Status.String() + ": " + e.Message
}

// Is reports whether target is an *Error of the same status.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Status == e.Status
}

func errorf(s Status, format string, args ...any) *Error {
	return &Error{Status: s, Message: fmt.Sprintf(format, args...)}
}

// Sentinels, one per refusal status, for errors.Is.
var (
	ErrMalformed    = &Error{Status: StatusMalformed}
	ErrTooLarge     = &Error{Status: StatusTooLarge}
	ErrSenderQuota  = &Error{Status: StatusSenderQuota}
	ErrMailboxFull  = &Error{Status: StatusMailboxFull}
	ErrUnauthorized = &Error{Status: StatusUnauthorized}
	ErrReplay       = &Error{Status: StatusReplay}
	ErrStale        = &Error{Status: StatusStale}
	ErrRevoked      = &Error{Status: StatusRevoked}
	ErrExpired      = &Error{Status: StatusExpired}
	ErrBusy         = &Error{Status: StatusBusy}
	ErrNotReplica   = &Error{Status: StatusNotReplica}
	ErrInternal     = &Error{Status: StatusInternal}
)

// ErrNoQuorum is returned by Put when fewer than the write quorum of replicas stored the envelope. It wraps
// the replicas' own refusals, so errors.Is(err, ErrSenderQuota) and the like still work.
var ErrNoQuorum = errors.New("mailbox: no write quorum")

// ErrClosed is returned after Close.
var ErrClosed = errors.New("mailbox: closed")

// statusOf maps an error to the status sent on the wire.
func statusOf(err error) Status {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return StatusInternal
}
