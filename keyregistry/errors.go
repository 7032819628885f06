package keyregistry

import (
	"errors"
	"fmt"
)

// Code is a stable numeric error code of the directory. It travels in the
// gateway's error frame (wire.Error) beside its reason string. The directory
// owns codes 100 to 149; they are never renumbered or reused (docs/PROTOCOL.md
// §7, "Directory operations").
type Code int

// Error codes of the directory. Each is the wire form of one sentinel below.
const (
	CodeMalformed       Code = 100
	CodeTooLarge        Code = 101
	CodeBadSignature    Code = 102
	CodeRevokedSigner   Code = 103
	CodeInvalidChain    Code = 104
	CodeAccountMismatch Code = 105
	CodeRollback        Code = 106
	CodeFork            Code = 107
	CodeNonceUnknown    Code = 108
	CodeNonceExpired    Code = 109
	CodeNonceReplayed   Code = 110
	CodeNonceOtherConn  Code = 111
	CodeBadProof        Code = 112
	CodeUsernameInvalid Code = 113
	CodeUsernameTaken   Code = 114
	CodeUsernameLapsed  Code = 115
	CodeExists          Code = 116
	CodeNotFound        Code = 117
	CodeUnavailable     Code = 118
	CodeInternal        Code = 119
	CodeKeyExpired      Code = 120
	CodeDeviceRevoked   Code = 121
	CodeUsernameLost    Code = 122
)

var codeReasons = map[Code]string{
	CodeMalformed:       "directory_malformed",
	CodeTooLarge:        "directory_too_large",
	CodeBadSignature:    "directory_bad_signature",
	CodeRevokedSigner:   "directory_revoked_signer",
	CodeInvalidChain:    "directory_invalid_chain",
	CodeAccountMismatch: "directory_account_mismatch",
	CodeRollback:        "directory_rollback",
	CodeFork:            "directory_fork",
	CodeNonceUnknown:    "directory_nonce_unknown",
	CodeNonceExpired:    "directory_nonce_expired",
	CodeNonceReplayed:   "directory_nonce_replayed",
	CodeNonceOtherConn:  "directory_nonce_other_connection",
	CodeBadProof:        "directory_bad_proof",
	CodeUsernameInvalid: "directory_username_invalid",
	CodeUsernameTaken:   "directory_username_taken",
	CodeUsernameLapsed:  "directory_username_lapsed",
	CodeExists:          "directory_exists",
	CodeNotFound:        "directory_not_found",
	CodeUnavailable:     "directory_unavailable",
	CodeInternal:        "directory_internal",
	CodeKeyExpired:      "directory_key_expired",
	CodeDeviceRevoked:   "directory_device_revoked",
	CodeUsernameLost:    "directory_username_lost",
}

// Reason returns the code's stable snake_case name.
func (c Code) Reason() string {
	if r, ok := codeReasons[c]; ok {
		return r
	}
	return "unknown"
}

// Sentinel errors. Callers test for them with errors.Is; CodeOf maps them to
// their wire codes.
var (
	// ErrMalformed means a record, request or chain could not be decoded
	// strictly (unknown fields, trailing bytes, wrong version, bad lengths).
	ErrMalformed = errors.New("malformed")
	// ErrTooLarge means an input exceeds its size cap.
	ErrTooLarge = errors.New("too large")
	// ErrBadSignature means a signature in a chain or proof does not verify.
	ErrBadSignature = errors.New("bad signature")
	// ErrRevokedSigner means a statement is signed by a device that was
	// revoked (or never added) at that point of the chain.
	ErrRevokedSigner = errors.New("signer not a current device")
	// ErrInvalidChain means the chain does not replay for another reason
	// (broken hash link, bad sequence, unknown statement kind).
	ErrInvalidChain = errors.New("invalid chain")
	// ErrAccountMismatch means a record's key does not match its content.
	ErrAccountMismatch = errors.New("account mismatch")
	// ErrRollback means the chain is a strict prefix of one already held.
	ErrRollback = errors.New("rollback")
	// ErrFork means two chains share a prefix but diverge.
	ErrFork = errors.New("fork")
	// ErrNonceUnknown means the nonce was never issued by this gateway (or it
	// was forgotten long after it expired).
	ErrNonceUnknown = errors.New("unknown nonce")
	// ErrNonceExpired means the nonce was issued but is past its lifetime.
	ErrNonceExpired = errors.New("nonce expired")
	// ErrNonceReplayed means the nonce was already used.
	ErrNonceReplayed = errors.New("nonce replayed")
	// ErrNonceOtherConn means the nonce was issued to another connection.
	ErrNonceOtherConn = errors.New("nonce issued to another connection")
	// ErrBadProof means the registration proof or the messaging-key proof of
	// possession does not verify.
	ErrBadProof = errors.New("bad proof")
	// ErrUsernameInvalid means a username is outside the allowed alphabet or
	// length.
	ErrUsernameInvalid = errors.New("invalid username")
	// ErrUsernameTaken means a live claim of another account holds the name.
	ErrUsernameTaken = errors.New("username taken")
	// ErrUsernameLost means the account's own live claim of a name lost to
	// another account's claim that comes first in the grid's order of
	// competing claims (two claims made where neither saw the other, e.g.
	// across a network partition): the name is the other account's, and
	// renewing the lost claim is refused.
	ErrUsernameLost = errors.New("username claim lost to an earlier claim")
	// ErrUsernameLapsed means a username claim is older than the claim
	// lifetime and was not renewed.
	ErrUsernameLapsed = errors.New("username claim lapsed")
	// ErrExists means a registration names an account the grid already holds.
	ErrExists = errors.New("account exists")
	// ErrNotFound means no valid record exists.
	ErrNotFound = errors.New("not found")
	// ErrUnavailable means the directory could not reach the grid.
	ErrUnavailable = errors.New("unavailable")
	// ErrKeyExpired means a signed messaging key is past its expiry (or
	// created too far in the future).
	ErrKeyExpired = errors.New("messaging key expired")
	// ErrDeviceRevoked means the device was revoked from its account, so its
	// messaging key is neither accepted nor served.
	ErrDeviceRevoked = errors.New("device revoked")
)

var codes = []struct {
	err  error
	code Code
}{
	{ErrMalformed, CodeMalformed},
	{ErrTooLarge, CodeTooLarge},
	{ErrBadSignature, CodeBadSignature},
	{ErrRevokedSigner, CodeRevokedSigner},
	{ErrInvalidChain, CodeInvalidChain},
	{ErrAccountMismatch, CodeAccountMismatch},
	{ErrRollback, CodeRollback},
	{ErrFork, CodeFork},
	{ErrNonceUnknown, CodeNonceUnknown},
	{ErrNonceExpired, CodeNonceExpired},
	{ErrNonceReplayed, CodeNonceReplayed},
	{ErrNonceOtherConn, CodeNonceOtherConn},
	{ErrBadProof, CodeBadProof},
	{ErrUsernameInvalid, CodeUsernameInvalid},
	{ErrUsernameTaken, CodeUsernameTaken},
	{ErrUsernameLost, CodeUsernameLost},
	{ErrUsernameLapsed, CodeUsernameLapsed},
	{ErrExists, CodeExists},
	{ErrNotFound, CodeNotFound},
	{ErrUnavailable, CodeUnavailable},
	{ErrKeyExpired, CodeKeyExpired},
	{ErrDeviceRevoked, CodeDeviceRevoked},
}

// CodeOf returns the wire code of err: the code of the first sentinel in its
// chain, or CodeInternal.
func CodeOf(err error) Code {
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return CodeInternal
}

// Error is the directory's error type: the operation that failed, on what,
// and its cause (which wraps one of the sentinels).
type Error struct {
	Op      string // e.g. "register", "append", "lookup account"
	Subject string // what it failed on, e.g. an account ID in hex; may be empty
	Err     error
}

// Error returns "keyregistry: <op> <subject>: <cause>".
func (e *Error) Error() string {
	if e.Subject == "" {
		return fmt.Sprintf("keyregistry: %s: %v", e.Op, e.Err)
	}
	return fmt.Sprintf("keyregistry: %s %s: %v", e.Op, e.Subject, e.Err)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

func opErr(op, subject string, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Op: op, Subject: subject, Err: err}
}

// kind wraps cause with a sentinel so errors.Is reports the sentinel while the
// message keeps the cause.
func kind(sentinel, cause error) error {
	if cause == nil {
		return sentinel
	}
	if errors.Is(cause, sentinel) {
		return cause
	}
	return fmt.Errorf("%w: %w", sentinel, cause)
}
