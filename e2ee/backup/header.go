// Package backup writes and reads encrypted backup archives.
//
// A random 256-bit master key encrypts the archive. The key is wrapped by a
// key derived from the user's passphrase with Argon2id (parameters and salt
// in the header; never below t=3, m=64 MiB, p=4) and optionally also by a
// printed recovery key. The payload follows the header in authenticated
// chunks (STREAM: a per-chunk nonce from a counter and a last-chunk flag,
// under a key derived per archive and bound to the header), so truncation,
// reordering, swapping chunks between archives and header tampering are all
// detected. Reading and writing stream in bounded memory.
//
// A signed Manifest with a sequence number lets a client refuse an older
// backup served as the newest. See docs/PROTOCOL.md section 3.
package backup

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
)

// Format constants of version 1.
const (
	// Magic starts every archive.
	Magic = "GCBK"
	// Version is the archive format version this package writes.
	Version = 1
	// KDFArgon2id identifies Argon2id as the passphrase KDF.
	KDFArgon2id = 1

	// WrapPassphrase marks the master key wrapped under the passphrase.
	WrapPassphrase = 1
	// WrapRecoveryKey marks the master key wrapped under the recovery key.
	WrapRecoveryKey = 2

	// DefaultChunkSize is the plaintext size of every chunk but the last.
	DefaultChunkSize = 64 << 10
	// MinChunkSize and MaxChunkSize bound the chunk size a reader accepts.
	MinChunkSize = 16
	// MaxChunkSize is the largest chunk size a reader accepts.
	MaxChunkSize = 1 << 20

	saltSize      = 16
	archiveIDSize = 16
	keySize       = 32
	wrapSize      = 1 + keySize + chacha20poly1305.Overhead
	macSize       = sha256.Size
	prefixSize    = 4 + 1 + 1 + 4 + 4 + 1 + saltSize + archiveIDSize + 4 + 1
	// MaxHeaderSize is the largest header of version 1.
	MaxHeaderSize = prefixSize + 2*wrapSize + macSize
)

// Labels for key derivation.
const (
	labelRecoveryKEK = "gridchat/v1/backup/recovery-kek"
	labelHeaderMAC   = "gridchat/v1/backup/header-mac"
	labelPayload     = "gridchat/v1/backup/payload"
)

// Params are the Argon2id parameters of an archive.
type Params struct {
	// Time is the number of passes.
	Time uint32
	// MemoryKiB is the memory size in KiB.
	MemoryKiB uint32
	// Threads is the degree of parallelism.
	Threads uint8
}

// DefaultParams returns the default (and minimum) Argon2id parameters:
// t=3, m=64 MiB, p=4.
func DefaultParams() Params { return Params{Time: 3, MemoryKiB: 64 << 10, Threads: 4} }

// Upper limits on stored parameters, so a hostile header cannot make a
// reader spend unbounded memory or time.
const (
	maxTime      = 16
	maxMemoryKiB = 1 << 20 // 1 GiB
	maxThreads   = 16
)

func (p Params) check() error {
	floor := DefaultParams()
	if p.Time < floor.Time || p.MemoryKiB < floor.MemoryKiB || p.Threads < floor.Threads {
		return fmt.Errorf("Argon2id t=%d m=%dKiB p=%d below t=%d m=%dKiB p=%d: %w",
			p.Time, p.MemoryKiB, p.Threads, floor.Time, floor.MemoryKiB, floor.Threads, ErrWeakParams)
	}
	if p.Time > maxTime || p.MemoryKiB > maxMemoryKiB || p.Threads > maxThreads {
		return fmt.Errorf("Argon2id t=%d m=%dKiB p=%d above limits t=%d m=%dKiB p=%d: %w",
			p.Time, p.MemoryKiB, p.Threads, maxTime, maxMemoryKiB, maxThreads, ErrFormat)
	}
	return nil
}

// Typed errors of this package; match them with errors.Is.
var (
	// ErrNotBackup reports input that does not start with the magic.
	ErrNotBackup = errors.New("backup: not a gridchat backup")
	// ErrVersion reports an archive of an unsupported version.
	ErrVersion = errors.New("backup: unsupported archive version")
	// ErrFormat reports a malformed header.
	ErrFormat = errors.New("backup: malformed header")
	// ErrWeakParams reports stored Argon2id parameters below the floor.
	ErrWeakParams = errors.New("backup: Argon2id parameters below the minimum")
	// ErrWrongPassphrase reports a passphrase that does not unwrap the key
	// (or a header whose KDF fields were altered).
	ErrWrongPassphrase = errors.New("backup: wrong passphrase")
	// ErrWrongRecoveryKey reports a recovery key that does not unwrap the
	// archive's key.
	ErrWrongRecoveryKey = errors.New("backup: wrong recovery key")
	// ErrNoRecoveryKey reports an archive written without a recovery key.
	ErrNoRecoveryKey = errors.New("backup: archive has no recovery key")
	// ErrHeaderAuth reports a header that fails authentication.
	ErrHeaderAuth = errors.New("backup: header authentication failed")
	// ErrChunkAuth reports a chunk that fails authentication: altered,
	// cut, reordered, or taken from another archive.
	ErrChunkAuth = errors.New("backup: chunk authentication failed")
	// ErrTruncated reports an archive whose final chunk is missing.
	ErrTruncated = errors.New("backup: archive truncated")
	// ErrBadRecoveryKey reports a recovery key text that is malformed or
	// fails its checksum (a typo).
	ErrBadRecoveryKey = errors.New("backup: malformed recovery key")
)

// Header is a parsed archive header. Parsing checks its structure and
// parameters; authenticity is checked when it is unlocked.
type Header struct {
	raw       []byte
	params    Params
	salt      []byte
	archiveID []byte
	chunkSize int
	wraps     [][]byte // wraps[i] = type || wrapped key
}

// ArchiveID returns the archive's random 16-byte ID.
func (h *Header) ArchiveID() []byte { return bytes.Clone(h.archiveID) }

// Params returns the archive's Argon2id parameters.
func (h *Header) Params() Params { return h.params }

// HasRecoveryKey says whether the master key is also wrapped under a
// recovery key.
func (h *Header) HasRecoveryKey() bool { return len(h.wraps) == 2 }

// ReadHeader reads and parses an archive header from r, leaving r at the
// first chunk.
func ReadHeader(r io.Reader) (*Header, error) {
	const op = "backup: read header"
	raw := make([]byte, prefixSize, MaxHeaderSize)
	if n, err := io.ReadFull(r, raw[:5]); err != nil {
		if n < 4 || string(raw[:4]) != Magic {
			return nil, fmt.Errorf("%s: %w", op, ErrNotBackup)
		}
		return nil, fmt.Errorf("%s: %w", op, ErrFormat)
	}
	if string(raw[:4]) != Magic {
		return nil, fmt.Errorf("%s: %w", op, ErrNotBackup)
	}
	if raw[4] != Version {
		return nil, fmt.Errorf("%s: version %d: %w", op, raw[4], ErrVersion)
	}
	if _, err := io.ReadFull(r, raw[5:prefixSize]); err != nil {
		return nil, fmt.Errorf("%s: %w", op, ErrFormat)
	}
	h := &Header{}
	p := raw[5:]
	if p[0] != KDFArgon2id {
		return nil, fmt.Errorf("%s: KDF %d: %w", op, p[0], ErrFormat)
	}
	h.params = Params{
		Time:      binary.BigEndian.Uint32(p[1:]),
		MemoryKiB: binary.BigEndian.Uint32(p[5:]),
		Threads:   p[9],
	}
	if err := h.params.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	p = p[10:]
	h.salt, p = p[:saltSize], p[saltSize:]
	h.archiveID, p = p[:archiveIDSize], p[archiveIDSize:]
	h.chunkSize = int(binary.BigEndian.Uint32(p))
	if h.chunkSize < MinChunkSize || h.chunkSize > MaxChunkSize {
		return nil, fmt.Errorf("%s: chunk size %d: %w", op, h.chunkSize, ErrFormat)
	}
	nwraps := int(p[4])
	if nwraps < 1 || nwraps > 2 {
		return nil, fmt.Errorf("%s: %d wrapped keys: %w", op, nwraps, ErrFormat)
	}
	raw = raw[:prefixSize+nwraps*wrapSize+macSize]
	if _, err := io.ReadFull(r, raw[prefixSize:]); err != nil {
		return nil, fmt.Errorf("%s: %w", op, ErrFormat)
	}
	for i := range nwraps {
		w := raw[prefixSize+i*wrapSize : prefixSize+(i+1)*wrapSize]
		if want := byte(WrapPassphrase + i); w[0] != want {
			return nil, fmt.Errorf("%s: wrapped key %d of type %d: %w", op, i, w[0], ErrFormat)
		}
		h.wraps = append(h.wraps, w)
	}
	h.raw = raw
	h.salt = raw[5+10 : 5+10+saltSize]
	h.archiveID = raw[5+10+saltSize : 5+10+saltSize+archiveIDSize]
	return h, nil
}

// Key is an archive's unwrapped master key, bound to its header. Call
// Destroy when done.
type Key struct {
	master    []byte
	archiveID []byte
}

// Destroy zeroes the key.
func (k *Key) Destroy() { clear(k.master) }

type kdfFunc func(password, salt []byte, time, memory uint32, threads uint8, keyLen uint32) []byte

// Unlock derives the passphrase key with Argon2id, unwraps the master key
// and authenticates the header. It returns ErrWrongPassphrase or
// ErrHeaderAuth on failure.
func (h *Header) Unlock(passphrase []byte) (*Key, error) {
	return h.unlock(passphrase, argon2.IDKey)
}

func (h *Header) unlock(passphrase []byte, kdf kdfFunc) (*Key, error) {
	kek := kdf(passphrase, h.salt, h.params.Time, h.params.MemoryKiB, h.params.Threads, keySize)
	defer clear(kek)
	k, err := h.unwrap(0, kek)
	if err != nil {
		return nil, fmt.Errorf("backup: unlock: %w", ErrWrongPassphrase)
	}
	return k, nil
}

// UnlockRecovery unwraps the master key with a recovery key and
// authenticates the header.
func (h *Header) UnlockRecovery(rk *RecoveryKey) (*Key, error) {
	if !h.HasRecoveryKey() {
		return nil, fmt.Errorf("backup: unlock: %w", ErrNoRecoveryKey)
	}
	kek, err := recoveryKEK(rk, h.salt)
	if err != nil {
		return nil, fmt.Errorf("backup: unlock: %w", err)
	}
	defer clear(kek)
	k, err := h.unwrap(1, kek)
	if err != nil {
		return nil, fmt.Errorf("backup: unlock: %w", ErrWrongRecoveryKey)
	}
	return k, nil
}

func recoveryKEK(rk *RecoveryKey, salt []byte) ([]byte, error) {
	return hkdf.Key(sha256.New, rk.key[:], salt, labelRecoveryKEK, keySize)
}

func (h *Header) unwrap(i int, kek []byte) (*Key, error) {
	aead, err := chacha20poly1305.New(kek)
	if err != nil {
		return nil, err
	}
	w := h.wraps[i]
	master, err := aead.Open(nil, make([]byte, chacha20poly1305.NonceSize), w[1:], wrapAD(h.raw[:prefixSize], w[0]))
	if err != nil {
		return nil, err
	}
	k := &Key{master: master, archiveID: h.archiveID}
	if err := h.verify(k); err != nil {
		k.Destroy()
		return nil, err
	}
	return k, nil
}

func wrapAD(prefix []byte, typ byte) []byte {
	return append(bytes.Clone(prefix), typ)
}

func headerMAC(master, archiveID, body []byte) ([]byte, error) {
	mk, err := hkdf.Key(sha256.New, master, archiveID, labelHeaderMAC, keySize)
	if err != nil {
		return nil, err
	}
	m := hmac.New(sha256.New, mk)
	m.Write(body)
	clear(mk)
	return m.Sum(nil), nil
}

// verify checks the header MAC under k.
func (h *Header) verify(k *Key) error {
	body, tag := h.raw[:len(h.raw)-macSize], h.raw[len(h.raw)-macSize:]
	want, err := headerMAC(k.master, h.archiveID, body)
	if err != nil {
		return err
	}
	if !hmac.Equal(tag, want) {
		return fmt.Errorf("backup: %w", ErrHeaderAuth)
	}
	return nil
}

// payloadKey derives the chunk key of an archive, bound to its archive ID
// and to the hash of its whole header.
func payloadKey(master, archiveID, header []byte) ([]byte, error) {
	hh := sha256.Sum256(header)
	return hkdf.Key(sha256.New, master, archiveID, labelPayload+"\x00"+string(hh[:]), chacha20poly1305.KeySize)
}
