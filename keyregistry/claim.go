package keyregistry

import (
	"bytes"
	"time"

	"github.com/iagon/gridchat/e2ee"
)

// claim is what orders one account's live claim of its username against
// other accounts' claims of the same name (docs/PROTOCOL.md §5, "Competing
// claims"). Every node computes it from the record alone, so every node
// orders two claims the same way and the DHT converges on one winner.
type claim struct {
	// start is the sequence number of the set-username statement that began
	// the claim: the first of the chain's last run of set-username
	// statements for the name, each renewing the previous before it lapsed.
	// A renewal keeps its claim's place; leaving the name, or letting it
	// lapse, gives it up.
	start uint64
	// at is the start statement's signed time. The claimant chooses it (the
	// accepting gateway only checks it against its own clock), so it orders
	// claims only when neither is witnessed.
	at time.Time
	// witnessed is the earliest time at which the log's witnesses
	// (a quorum of them, chain.Checkpoint.Witnessed) had cosigned a
	// checkpoint holding the start statement or a later statement of the
	// chain (each commits to the start by its hash link); zero if no receipt
	// of those statements carries a verified witness time.
	witnessed time.Time
}

// claimOf computes the claim of h's username from its statements and the
// witnessed time of each statement's verified receipt (by sequence; absent
// or zero when unknown). lifetime is the claim lifetime.
func claimOf(h *held, witnessed map[uint64]time.Time, lifetime time.Duration) claim {
	var c claim
	if h.acct.Username == "" {
		return c
	}
	name, last := "", time.Time{}
	for _, s := range h.chain.Statements() {
		b, ok := s.Body.(*e2ee.SetUsername)
		if !ok {
			continue
		}
		if b.Username != name || !s.Time.Before(last.Add(lifetime)) {
			c.start, c.at = s.Seq, s.Time
		}
		name, last = b.Username, s.Time
	}
	for seq, t := range witnessed {
		if seq >= c.start && !t.IsZero() && (c.witnessed.IsZero() || t.Before(c.witnessed)) {
			c.witnessed = t
		}
	}
	return c
}

// compareClaims orders the live claims of two different accounts on one
// name; the smaller claim wins. The order is total and uses nothing but the
// two records:
//
//  1. A claim with a witnessed time comes before one without: its time is
//     one the claimant could not choose.
//  2. Of two witnessed claims, the earlier witnessed time (whole seconds, the
//     precision of a cosignature) wins.
//  3. Of two unwitnessed claims, the earlier signed statement time wins.
//  4. The smaller account ID (bytewise) breaks every remaining tie.
//
// Witnessed claims that tie on the second skip the statement time on
// purpose: inside one second it would only add a time the claimant picks.
func compareClaims(a, b *held) int {
	ca, cb := a.claim, b.claim
	wa, wb := !ca.witnessed.IsZero(), !cb.witnessed.IsZero()
	switch {
	case wa && !wb:
		return -1
	case wb && !wa:
		return 1
	case wa:
		if c := ca.witnessed.Compare(cb.witnessed); c != 0 {
			return c
		}
	default:
		if c := ca.at.Compare(cb.at); c != 0 {
			return c
		}
	}
	return bytes.Compare(a.acct.ID[:], b.acct.ID[:])
}

// compareHolders orders two records of different accounts opened under one
// name's key, each a live claim of the name (ca, cb) or not (a release, or
// a claim its account is known to have left: usernameValidator.holds): a
// live claim comes before every other record, live claims follow
// compareClaims, and the others, which hold nothing, fall to the smaller
// account ID so that the choice among them is still the same everywhere.
func compareHolders(a *held, ca bool, b *held, cb bool) int {
	switch {
	case ca && !cb:
		return -1
	case cb && !ca:
		return 1
	case ca:
		return compareClaims(a, b)
	}
	return bytes.Compare(a.acct.ID[:], b.acct.ID[:])
}

// claimBefore reports whether a's claim comes before (beats) b's.
func claimBefore(a, b *held) bool { return compareClaims(a, b) < 0 }
