package dht

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	record "github.com/libp2p/go-libp2p-record"
)

// Errors a caller can act on. Every error returned by [Validator] matches
// ErrInvalidRecord with errors.Is, and one of the more specific kinds below
// where it applies.
var (
	// ErrInvalidRecord marks every refusal of a record by the grid's validator.
	ErrInvalidRecord = errors.New("invalid record")
	// ErrUnknownNamespace is returned for a key whose namespace has no validator.
	ErrUnknownNamespace = errors.New("unknown record namespace")
	// ErrMalformedKey is returned for a key that is not of the form /namespace/rest.
	ErrMalformedKey = errors.New("malformed record key")
	// ErrRecordTooLarge is returned for a value above the validator's size cap.
	ErrRecordTooLarge = errors.New("record value too large")
	// ErrKeyTooLarge is returned for a key above MaxKeySize.
	ErrKeyTooLarge = errors.New("record key too large")
)

// MaxKeySize is the largest record key, in bytes, that the grid accepts.
const MaxKeySize = 512

// DefaultMaxValueSize is the default cap on a record value, in bytes.
const DefaultMaxValueSize = 64 << 10

// namespaceRE is the shape of a namespace name: short, lowercase, no slash, so
// that keys stay readable and a namespace can never hide inside another.
var namespaceRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)

// RecordError tells why a record was refused: the namespace and key it was
// stored under and the reason. It matches ErrInvalidRecord and its Reason with
// errors.Is.
type RecordError struct {
	// Namespace is the key's namespace, empty when the key had none.
	Namespace string
	// Key is the full record key, cut to 64 bytes for display.
	Key string
	// Reason is the cause: one of this package's sentinels or the error the
	// namespace's validator returned.
	Reason error
}

// Error implements error.
func (e *RecordError) Error() string {
	if e.Namespace == "" {
		return fmt.Sprintf("dht: invalid record %q: %v", e.Key, e.Reason)
	}
	return fmt.Sprintf("dht: invalid record %q in namespace %q: %v", e.Key, e.Namespace, e.Reason)
}

// Unwrap lets errors.Is find both ErrInvalidRecord and the reason.
func (e *RecordError) Unwrap() []error { return []error{ErrInvalidRecord, e.Reason} }

// Validator is the grid's record validator: it dispatches on a key's
// namespace (/namespace/rest) to the validator registered for that namespace,
// after checking key and value sizes. Keys in a namespace without a validator
// are refused, so a node stores only records some service knows how to check.
// It is immutable after construction and safe for concurrent use.
type Validator struct {
	byNS         map[string]record.Validator
	maxValueSize int
}

var _ record.Validator = (*Validator)(nil)

// NewValidator returns a validator for the given namespaces. Namespace names
// are lowercase letters, digits and '-', starting with a letter, at most 32
// bytes. maxValueSize caps every value; zero means DefaultMaxValueSize.
func NewValidator(namespaces map[string]record.Validator, maxValueSize int) (*Validator, error) {
	if maxValueSize < 0 {
		return nil, fmt.Errorf("dht: new validator: negative max value size %d", maxValueSize)
	}
	if maxValueSize == 0 {
		maxValueSize = DefaultMaxValueSize
	}
	byNS := make(map[string]record.Validator, len(namespaces))
	for ns, v := range namespaces {
		if !namespaceRE.MatchString(ns) {
			return nil, fmt.Errorf("dht: new validator: bad namespace name %q (want %s)", ns, namespaceRE)
		}
		if v == nil {
			return nil, fmt.Errorf("dht: new validator: nil validator for namespace %q", ns)
		}
		byNS[ns] = v
	}
	return &Validator{byNS: byNS, maxValueSize: maxValueSize}, nil
}

// Namespaces returns the registered namespace names, sorted.
func (v *Validator) Namespaces() []string {
	names := make([]string, 0, len(v.byNS))
	for ns := range v.byNS {
		names = append(names, ns)
	}
	slices.Sort(names)
	return names
}

// MaxValueSize returns the cap on a record value, in bytes.
func (v *Validator) MaxValueSize() int { return v.maxValueSize }

// lookup returns the namespace and validator of key, or a *RecordError.
func (v *Validator) lookup(key string) (string, record.Validator, error) {
	if len(key) > MaxKeySize {
		return "", nil, &RecordError{Key: shortKey(key), Reason: ErrKeyTooLarge}
	}
	ns, rest, err := record.SplitKey(key)
	if err != nil || rest == "" {
		return "", nil, &RecordError{Key: shortKey(key), Reason: ErrMalformedKey}
	}
	nv, ok := v.byNS[ns]
	if !ok {
		return ns, nil, &RecordError{Namespace: ns, Key: shortKey(key), Reason: ErrUnknownNamespace}
	}
	return ns, nv, nil
}

// Validate implements record.Validator.
func (v *Validator) Validate(key string, value []byte) error {
	ns, nv, err := v.lookup(key)
	if err != nil {
		return err
	}
	if len(value) > v.maxValueSize {
		return &RecordError{Namespace: ns, Key: shortKey(key),
			Reason: fmt.Errorf("%w: %d bytes, limit %d", ErrRecordTooLarge, len(value), v.maxValueSize)}
	}
	if err := nv.Validate(key, value); err != nil {
		return &RecordError{Namespace: ns, Key: shortKey(key), Reason: err}
	}
	return nil
}

// Select implements record.Validator. It asks the namespace's validator which
// of values is best; values are assumed to have been validated.
func (v *Validator) Select(key string, values [][]byte) (int, error) {
	if len(values) == 0 {
		return 0, fmt.Errorf("dht: select %q: no values", shortKey(key))
	}
	ns, nv, err := v.lookup(key)
	if err != nil {
		return 0, err
	}
	i, err := nv.Select(key, values)
	if err != nil {
		return 0, fmt.Errorf("dht: select %q in namespace %q: %w", shortKey(key), ns, err)
	}
	if i < 0 || i >= len(values) {
		return 0, fmt.Errorf("dht: select %q in namespace %q: validator chose index %d of %d", shortKey(key), ns, i, len(values))
	}
	return i, nil
}

// shortKey cuts a key for error messages, so a hostile key cannot flood logs.
func shortKey(key string) string {
	const limit = 64
	if len(key) <= limit {
		return key
	}
	return strings.ToValidUTF8(key[:limit], "") + "…"
}
