package dht

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	record "github.com/libp2p/go-libp2p-record"
)

var errNotGood = errors.New("value is not good")

// goodValidator accepts values starting with "good" and selects the longest.
type goodValidator struct{}

func (goodValidator) Validate(_ string, v []byte) error {
	if !bytes.HasPrefix(v, []byte("good")) {
		return errNotGood
	}
	return nil
}

func (goodValidator) Select(_ string, vs [][]byte) (int, error) {
	best := 0
	for i, v := range vs {
		if len(v) > len(vs[best]) {
			best = i
		}
	}
	return best, nil
}

// badSelector returns an index out of range.
type badSelector struct{ goodValidator }

func (badSelector) Select(string, [][]byte) (int, error) { return 7, nil }

func TestValidatorRefusesWithNamedReason(t *testing.T) {
	v, err := NewValidator(map[string]record.Validator{"acct": goodValidator{}}, 16)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, key string
		value     []byte
		reason    error // nil: accepted
	}{
		{"valid", "/acct/alice", []byte("good"), nil},
		{"validator refuses", "/acct/alice", []byte("bad"), errNotGood},
		{"too large", "/acct/alice", []byte("good" + strings.Repeat("x", 13)), ErrRecordTooLarge},
		{"unknown namespace", "/other/alice", []byte("good"), ErrUnknownNamespace},
		{"no namespace", "alice", []byte("good"), ErrMalformedKey},
		{"empty rest", "/acct/", []byte("good"), ErrMalformedKey},
		{"empty key", "", []byte("good"), ErrMalformedKey},
		{"key too large", "/acct/" + strings.Repeat("a", MaxKeySize), []byte("good"), ErrKeyTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := v.Validate(tc.key, tc.value)
			if tc.reason == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidRecord) || !errors.Is(err, tc.reason) {
				t.Fatalf("err = %v, want ErrInvalidRecord and %v", err, tc.reason)
			}
			var re *RecordError
			if !errors.As(err, &re) || !strings.Contains(err.Error(), tc.reason.Error()) {
				t.Fatalf("err %q is not a *RecordError naming %q", err, tc.reason)
			}
			if len(re.Key) > 70 {
				t.Errorf("error carries a %d-byte key; keys are cut for display", len(re.Key))
			}
		})
	}
}

func TestValidatorSelect(t *testing.T) {
	v, err := NewValidator(map[string]record.Validator{"acct": goodValidator{}, "bad": badSelector{}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	i, err := v.Select("/acct/a", [][]byte{[]byte("good"), []byte("goodest")})
	if err != nil || i != 1 {
		t.Errorf("Select = %d, %v; want 1", i, err)
	}
	if _, err := v.Select("/acct/a", nil); err == nil {
		t.Error("Select of no values succeeded")
	}
	if _, err := v.Select("/nope/a", [][]byte{[]byte("good")}); !errors.Is(err, ErrUnknownNamespace) {
		t.Errorf("Select in unknown namespace: %v", err)
	}
	if _, err := v.Select("/bad/a", [][]byte{[]byte("good")}); err == nil {
		t.Error("an out-of-range choice by a namespace validator was passed on")
	}
}

func TestNewValidatorChecksNamespaces(t *testing.T) {
	for _, ns := range []string{"", "A", "a/b", "1abc", strings.Repeat("a", 33), "pk "} {
		if _, err := NewValidator(map[string]record.Validator{ns: goodValidator{}}, 0); err == nil {
			t.Errorf("namespace %q accepted", ns)
		}
	}
	if _, err := NewValidator(map[string]record.Validator{"ok": nil}, 0); err == nil {
		t.Error("nil validator accepted")
	}
	if _, err := NewValidator(nil, -1); err == nil {
		t.Error("negative size accepted")
	}
	v, err := NewValidator(map[string]record.Validator{"b": goodValidator{}, "a-1": goodValidator{}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(v.Namespaces(), ","); got != "a-1,b" {
		t.Errorf("Namespaces() = %s", got)
	}
	if v.MaxValueSize() != DefaultMaxValueSize {
		t.Errorf("MaxValueSize() = %d", v.MaxValueSize())
	}
}

func FuzzValidatorValidate(f *testing.F) {
	v, err := NewValidator(map[string]record.Validator{"acct": goodValidator{}}, 64)
	if err != nil {
		f.Fatal(err)
	}
	f.Add("/acct/alice", []byte("good"))
	f.Add("/acct/", []byte("good"))
	f.Add("//x", []byte{})
	f.Add("/acct/\xff\xfe", []byte("good"))
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		err := v.Validate(key, value)
		if err == nil {
			ns, rest, splitErr := record.SplitKey(key)
			if splitErr != nil || ns != "acct" || rest == "" || len(value) > 64 || len(key) > MaxKeySize ||
				!bytes.HasPrefix(value, []byte("good")) {
				t.Fatalf("accepted %q = %q", key, value)
			}
			return
		}
		if !errors.Is(err, ErrInvalidRecord) {
			t.Fatalf("refusal %v is not ErrInvalidRecord", err)
		}
	})
}
