// Package e2ee is gridchat's client cryptography core: device keys and IDs, signed messaging keys, the account
// sigchain, registration and authentication proofs, session key distribution and message encryption.
//
// It is a pure library: no network, no global state, only the standard library and golang.org/x/crypto, and it
// builds for GOOS=js GOARCH=wasm. Every format is versioned and described byte for byte in docs/PROTOCOL.md
// §1–2. Every signature is Ed25519ctx with a context string per purpose over the object's own encoding (minus
// the signature), and every signed encoding carries the suite identifiers, so nothing signed for one purpose
// verifies for another and nothing can be downgraded.
//
// Errors callers act on are sentinels (ErrBadSignature, ErrDecrypt, ErrReplay, ...) checked with errors.Is;
// sigchain failures are *ChainError values naming the first bad statement.
package e2ee
