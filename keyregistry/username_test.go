package keyregistry

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalizeUsernameFoldsCaseAndRefusesLookalikes(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"alice", "alice", true},
		{"Alice", "alice", true},
		{"ALICE.smith", "alice.smith", true},
		{"a_b-c.d", "a_b-c.d", true},
		{"abc", "abc", true},
		{"007", "007", true},
		{strings.Repeat("a", MaxUsernameLen), strings.Repeat("a", MaxUsernameLen), true},
		{"ab", "", false},
		{strings.Repeat("a", MaxUsernameLen+1), "", false},
		{"_alice", "", false},
		{"alice_", "", false},
		{"al..ice", "", false},
		{"al_-ice", "", false},
		{"al ice", "", false},
		{"alicé", "", false},  // non-ASCII: no lookalikes
		{"аlice", "", false},  // Cyrillic a
		{"al/ice", "", false}, // would break the key path
		{"al\x00ice", "", false},
	}
	for _, tt := range tests {
		got, err := NormalizeUsername(tt.in)
		if tt.ok {
			if err != nil || got != tt.want {
				t.Errorf("NormalizeUsername(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
			continue
		}
		if !errors.Is(err, ErrUsernameInvalid) {
			t.Errorf("NormalizeUsername(%q) = %q, %v; want ErrUsernameInvalid", tt.in, got, err)
		}
	}
}

func FuzzNormalizeUsername(f *testing.F) {
	for _, s := range []string{"alice", "Bob.Smith", "a_b", "..", "zz-top", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := NormalizeUsername(s)
		if err != nil {
			return
		}
		// Normalization is idempotent and yields only allowed bytes.
		if again, err := NormalizeUsername(n); err != nil || again != n {
			t.Fatalf("not idempotent: %q -> %q -> %q, %v", s, n, again, err)
		}
		if !strings.EqualFold(n, s) {
			t.Fatalf("changed more than case: %q -> %q", s, n)
		}
	})
}
