package main

import (
	"strings"
	"testing"
)

// "gridchat group add" and "group remove" as processes against a "gridnode swarm": the admin adds a member and
// removes them again, each printing what it did, and "group list" follows; either command with one argument
// is a usage error naming its own verb. The members never come online after "gridchat init".
func TestGridchatGroupAddAndRemoveProcessesAgainstGridnodeSwarm(t *testing.T) {
	s := startCLISwarm(t)
	alice, bob, carol := t.TempDir(), t.TempDir(), t.TempDir()
	s.must(alice, "init", "--node", s.gw1, "--username", "alice")
	s.must(bob, "init", "--node", s.gw2, "--username", "bob")
	s.must(carol, "init", "--node", s.gw1, "--username", "carol")
	// Bob and Carol have not been online since init: init put their messaging keys in the directory, so Alice
	// can start a group with them while they are offline.
	s.must(alice, "group", "create", "trio", "bob")
	// members counts the members "group list" shows for trio: the line is ID, quoted name, members.
	members := func() int {
		t.Helper()
		for _, line := range strings.Split(s.must(alice, "group", "list"), "\n") {
			if f := strings.Fields(line); len(f) > 2 && f[1] == `"trio"` {
				return len(f) - 2
			}
		}
		t.Fatal("group list does not show trio")
		return 0
	}
	if n := members(); n != 2 {
		t.Fatalf("trio has %d members after create, want 2", n)
	}

	if b := s.must(alice, "group", "add", "trio", "carol"); strings.TrimSpace(b) != "added carol" {
		t.Fatalf("group add printed %q, want \"added carol\"", b)
	}
	if n := members(); n != 3 {
		t.Fatalf("trio has %d members after add, want 3", n)
	}
	if b := s.must(alice, "group", "remove", "trio", "carol"); strings.TrimSpace(b) != "removed carol" {
		t.Fatalf("group remove printed %q, want \"removed carol\"", b)
	}
	if n := members(); n != 2 {
		t.Fatalf("trio has %d members after remove, want 2", n)
	}

	for _, verb := range []string{"add", "remove"} {
		b, err := s.run(alice, "group", verb, "trio")
		if err == nil || !strings.Contains(b, "group "+verb+" needs GROUP and USER") {
			t.Fatalf("group %s with one argument: %v\n%s", verb, err, b)
		}
	}
}
