// Package keyregistry is the grid's key directory: it validates account
// sigchains, registers first devices by signed nonce, accepts extensions of an
// account's chain (linking, revocation, usernames, profile), stores the
// self-verifying directory records in the DHT, hands every accepted statement
// to the key publication log, and answers lookups by account ID, device ID and
// username from a verified cache kept fresh by gossip.
//
// Nothing a node stores here can be forged by a node: every record carries the
// account's full signed chain, and every reader replays it before trusting it.
// A record is never replaced by a shorter chain (rollback) or by a different
// extension of the same chain (fork).
//
// The wire formats and operations are written down in docs/PROTOCOL.md,
// sections 5 ("Directory") and 7.
package keyregistry
