// Package kdfchain implements the symmetric ratchet of a gridchat session: from a chain key, one HKDF-SHA256
// step yields the next chain key and the AEAD key and nonce of one message.
package kdfchain

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
)

// Labels of the chain (documented in docs/PROTOCOL.md §2).
const (
	// LabelChainStart derives a sender device's first chain key from the session key.
	LabelChainStart = "gridchat/v1/chain-start"
	// LabelChainStep derives, from chain key n, chain key n+1 and the message key and nonce of message n.
	LabelChainStep = "gridchat/v1/chain-step"
)

// KeySize is the size of a chain key and of a message key.
const KeySize = 32

// NonceSize is the size of a ChaCha20-Poly1305 nonce.
const NonceSize = 12

// Start returns the first chain key of sender for a session: HKDF-SHA256 with the session key as IKM, no salt,
// and info = label || context.
func Start(sessionKey []byte, context []byte) ([KeySize]byte, error) {
	var out [KeySize]byte
	prk, err := hkdf.Extract(sha256.New, sessionKey, nil)
	if err != nil {
		return out, err
	}
	defer zero(prk)
	info := append([]byte(LabelChainStart), context...)
	k, err := hkdf.Expand(sha256.New, prk, string(info), KeySize)
	if err != nil {
		return out, err
	}
	copy(out[:], k)
	zero(k)
	return out, nil
}

// Step advances chain key ck (at message counter n) by one: it returns the next chain key and the message key
// and nonce for message n. HKDF-Expand with PRK = ck and info = label || uint64be(n), 76 bytes split 32/32/12.
// It computes RFC 5869's T(1..3) directly with one HMAC instance, since it runs once per message.
func Step(ck *[KeySize]byte, n uint64) (next [KeySize]byte, key [KeySize]byte, nonce [NonceSize]byte, err error) {
	var info [len(LabelChainStep) + 8]byte
	copy(info[:], LabelChainStep)
	binary.BigEndian.PutUint64(info[len(LabelChainStep):], n)
	mac := hmac.New(sha256.New, ck[:])
	var t [3 * sha256.Size]byte
	var prev []byte
	for i := 0; i < 3; i++ {
		if i > 0 {
			mac.Reset()
		}
		mac.Write(prev)
		mac.Write(info[:])
		mac.Write([]byte{byte(i + 1)})
		prev = mac.Sum(t[i*sha256.Size : i*sha256.Size])
	}
	copy(next[:], t[:KeySize])
	copy(key[:], t[KeySize:2*KeySize])
	copy(nonce[:], t[2*KeySize:2*KeySize+NonceSize])
	zero(t[:])
	return next, key, nonce, nil
}

func zero(p []byte) {
	for i := range p {
		p[i] = 0
	}
}
