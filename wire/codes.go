package wire

import (
	"errors"
	"fmt"
)

// Code is a stable numeric error code carried in an error frame. Codes are never renumbered or reused.
type Code int

// The error codes of protocol version 1. The table in docs/PROTOCOL.md §7 lists them with their meaning.
const (
	CodeMalformed            Code = 1  // the frame is not a valid version-1 request
	CodeUnsupportedVersion   Code = 2  // the frame's "v" is not a version this gateway speaks
	CodeUnknownOp            Code = 3  // no operation of that name
	CodeUnauthenticated      Code = 4  // the operation needs an authenticated connection
	CodeAuthFailed           Code = 5  // the auth proof or presence records did not verify
	CodeBadNonce             Code = 6  // the auth nonce is not this connection's unused nonce (replay)
	CodeRateLimited          Code = 7  // the connection or account exceeded its rate limit
	CodeTooLarge             Code = 8  // a field exceeds its size limit
	CodeBadRequest           Code = 9  // the body is well-formed JSON but its content is invalid
	CodeNotFound             Code = 10 // the thing asked for does not exist
	CodeRevoked              Code = 11 // the device has been revoked
	CodeUnavailable          Code = 12 // a service the operation needs is unavailable; retry later
	CodeInternal             Code = 13 // the gateway failed; retry later
	CodeAlreadyAuthenticated Code = 14 // auth sent on a connection that is already authenticated
	CodeDuplicateID          Code = 15 // the request id is not greater than every earlier id on this connection
	CodeBusy                 Code = 16 // too many requests in flight on this connection; wait for responses
	CodeQuota                Code = 17 // a quota of the recipient's mailbox is used up
	CodeLinkTaken            Code = 18 // the link rendezvous already has its host (or both sides): a third party
)

// Reason returns the code's stable snake_case name, or "unknown" for a code this version does not define.
func (c Code) Reason() string {
	switch c {
	case CodeMalformed:
		return "malformed"
	case CodeUnsupportedVersion:
		return "unsupported_version"
	case CodeUnknownOp:
		return "unknown_op"
	case CodeUnauthenticated:
		return "unauthenticated"
	case CodeAuthFailed:
		return "auth_failed"
	case CodeBadNonce:
		return "bad_nonce"
	case CodeRateLimited:
		return "rate_limited"
	case CodeTooLarge:
		return "too_large"
	case CodeBadRequest:
		return "bad_request"
	case CodeNotFound:
		return "not_found"
	case CodeRevoked:
		return "revoked"
	case CodeUnavailable:
		return "unavailable"
	case CodeInternal:
		return "internal"
	case CodeAlreadyAuthenticated:
		return "already_authenticated"
	case CodeDuplicateID:
		return "duplicate_id"
	case CodeBusy:
		return "busy"
	case CodeQuota:
		return "quota"
	case CodeLinkTaken:
		return "link_taken"
	}
	return "unknown"
}

// String returns the code's reason.
func (c Code) String() string { return c.Reason() }

// Error is the error object of an error frame. It is also a Go error, so handlers return it and clients test it
// with errors.Is against another *Error of the same code (for example errors.Is(err, wire.ErrRateLimited)).
type Error struct {
	Code    Code   `json:"code"`
	Reason  string `json:"reason"`
	Message string `json:"message,omitempty"`
}

// Errorf returns an *Error with code c and a formatted human-readable message.
func Errorf(c Code, format string, args ...any) *Error {
	return &Error{Code: c, Reason: c.Reason(), Message: fmt.Sprintf(format, args...)}
}

// Error implements error.
func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("wire: %s (%d)", e.Reason, e.Code)
	}
	return fmt.Sprintf("wire: %s (%d): %s", e.Reason, e.Code, e.Message)
}

// Is reports whether target is an *Error with the same code.
func (e *Error) Is(target error) bool {
	var t *Error
	if !errors.As(target, &t) {
		return false
	}
	return t.Code == e.Code
}

// Sentinel errors, one per code, for errors.Is. Their messages are empty; compare codes, not text.
var (
	ErrMalformed            = &Error{Code: CodeMalformed, Reason: CodeMalformed.Reason()}
	ErrUnsupportedVersion   = &Error{Code: CodeUnsupportedVersion, Reason: CodeUnsupportedVersion.Reason()}
	ErrUnknownOp            = &Error{Code: CodeUnknownOp, Reason: CodeUnknownOp.Reason()}
	ErrUnauthenticated      = &Error{Code: CodeUnauthenticated, Reason: CodeUnauthenticated.Reason()}
	ErrAuthFailed           = &Error{Code: CodeAuthFailed, Reason: CodeAuthFailed.Reason()}
	ErrBadNonce             = &Error{Code: CodeBadNonce, Reason: CodeBadNonce.Reason()}
	ErrRateLimited          = &Error{Code: CodeRateLimited, Reason: CodeRateLimited.Reason()}
	ErrTooLarge             = &Error{Code: CodeTooLarge, Reason: CodeTooLarge.Reason()}
	ErrBadRequest           = &Error{Code: CodeBadRequest, Reason: CodeBadRequest.Reason()}
	ErrNotFound             = &Error{Code: CodeNotFound, Reason: CodeNotFound.Reason()}
	ErrRevoked              = &Error{Code: CodeRevoked, Reason: CodeRevoked.Reason()}
	ErrUnavailable          = &Error{Code: CodeUnavailable, Reason: CodeUnavailable.Reason()}
	ErrInternal             = &Error{Code: CodeInternal, Reason: CodeInternal.Reason()}
	ErrAlreadyAuthenticated = &Error{Code: CodeAlreadyAuthenticated, Reason: CodeAlreadyAuthenticated.Reason()}
	ErrDuplicateID          = &Error{Code: CodeDuplicateID, Reason: CodeDuplicateID.Reason()}
	ErrBusy                 = &Error{Code: CodeBusy, Reason: CodeBusy.Reason()}
	ErrQuota                = &Error{Code: CodeQuota, Reason: CodeQuota.Reason()}
	ErrLinkTaken            = &Error{Code: CodeLinkTaken, Reason: CodeLinkTaken.Reason()}
)
