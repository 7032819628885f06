package e2ee

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error returned by this package wraps one of these (or is a *ChainError), so callers
// decide with errors.Is / errors.As.
var (
	// ErrMalformed: the input is not a valid encoding (truncated, trailing bytes, bad field, over a size cap).
	ErrMalformed = errors.New("malformed")
	// ErrUnsupported: the input names an unknown version or suite.
	ErrUnsupported = errors.New("unsupported version or suite")
	// ErrBadSignature: a signature does not verify under the given key and purpose.
	ErrBadSignature = errors.New("bad signature")
	// ErrDecrypt: authenticated decryption failed.
	ErrDecrypt = errors.New("decryption failed")
	// ErrReplay: the message was already opened (or its key is gone).
	ErrReplay = errors.New("replayed message")
	// ErrTooOld: the message's key was evicted from the skipped-key window.
	ErrTooOld = errors.New("message too old")
	// ErrWindow: the message is further ahead than the skipped-key window allows.
	ErrWindow = errors.New("message beyond window")
	// ErrUnknownSender: the sender device is not a current device of the account, or not the expected one.
	ErrUnknownSender = errors.New("unknown sender")
	// ErrRevoked: the device has been revoked.
	ErrRevoked = errors.New("device revoked")
	// ErrWrongConversation: the object belongs to another conversation or epoch.
	ErrWrongConversation = errors.New("wrong conversation or epoch")
	// ErrNotRecipient: this device has no entry in the key distribution.
	ErrNotRecipient = errors.New("not a recipient")
	// ErrUnknownKey: the messaging key the sender used is not held by this device (rotated out or never ours).
	ErrUnknownKey = errors.New("unknown messaging key")
	// ErrExpired: a time-bound object (signed messaging key, proof) is outside its validity.
	ErrExpired = errors.New("expired or not yet valid")
	// ErrMismatch: a proof is bound to another nonce, gateway, purpose or body than the one expected.
	ErrMismatch = errors.New("proof bound to other values")
	// ErrSessionUsed: the session has no chain key for the device (already claimed, or not a member).
	ErrSessionUsed = errors.New("no chain key for device in session")
)

func errorf(op string, kind error, format string, args ...any) error {
	return fmt.Errorf("e2ee: %s: %w: %s", op, kind, fmt.Sprintf(format, args...))
}

func malformed(op string) error { return fmt.Errorf("e2ee: %s: %w", op, ErrMalformed) }
