package backup

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"

	"golang.org/x/crypto/argon2"
)

// detRand is a deterministic byte stream (SHA-256 in counter mode) for
// reproducible archives.
type detRand struct {
	seed string
	ctr  uint64
	buf  []byte
}

func newDetRand(seed string) *detRand { return &detRand{seed: seed} }

func (d *detRand) Read(p []byte) (int, error) {
	for len(d.buf) < len(p) {
		h := sha256.New()
		h.Write([]byte(d.seed))
		h.Write(binary.BigEndian.AppendUint64(nil, d.ctr))
		d.ctr++
		d.buf = h.Sum(d.buf)
	}
	n := copy(p, d.buf)
	d.buf = d.buf[n:]
	return n, nil
}

// memoKDF runs the real Argon2id but remembers results, so exhaustive
// tests that open the same header many times pay for each distinct input
// once.
type memoKDF struct {
	mu   sync.Mutex
	seen map[string][]byte
}

func (m *memoKDF) IDKey(password, salt []byte, t, mem uint32, p uint8, n uint32) []byte {
	k := fmt.Sprintf("%x|%x|%d|%d|%d|%d", password, salt, t, mem, p, n)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seen == nil {
		m.seen = map[string][]byte{}
	}
	if v, ok := m.seen[k]; ok {
		return bytes.Clone(v)
	}
	v := argon2.IDKey(password, salt, t, mem, p, n)
	m.seen[k] = bytes.Clone(v)
	return v
}

var pass = []byte("correct horse battery staple")

// archive writes payload with the given options through the real writer
// (Argon2id memoised) and returns the archive bytes.
func archive(t testing.TB, kdf *memoKDF, payload []byte, o WriterOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := newWriter(&buf, pass, o, kdf.IDKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(payload); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// open reads an archive with the passphrase through the real reader path
// (Argon2id memoised).
func open(kdf *memoKDF, a []byte, passphrase []byte) ([]byte, error) {
	r := bytes.NewReader(a)
	h, err := ReadHeader(r)
	if err != nil {
		return nil, err
	}
	k, err := h.unlock(passphrase, kdf.IDKey)
	if err != nil {
		return nil, err
	}
	defer k.Destroy()
	pr, err := OpenPayload(h, k, r)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(pr)
}

// openWithKey reads an archive with an already unlocked key.
func openWithKey(k *Key, a []byte) ([]byte, error) {
	r := bytes.NewReader(a)
	h, err := ReadHeader(r)
	if err != nil {
		return nil, err
	}
	pr, err := OpenPayload(h, k, r)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(pr)
}

func unlockKey(t testing.TB, kdf *memoKDF, a []byte) *Key {
	t.Helper()
	h, err := ReadHeader(bytes.NewReader(a))
	if err != nil {
		t.Fatal(err)
	}
	k, err := h.unlock(pass, kdf.IDKey)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var typedErrors = []error{ErrNotBackup, ErrVersion, ErrFormat, ErrWeakParams, ErrWrongPassphrase,
	ErrWrongRecoveryKey, ErrNoRecoveryKey, ErrHeaderAuth, ErrChunkAuth, ErrTruncated}

func isTyped(err error) bool {
	for _, e := range typedErrors {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func payloadOf(n int) []byte {
	b := make([]byte, n)
	newDetRand(fmt.Sprint("payload", n)).Read(b)
	return b
}

func headerLen(a []byte) int {
	return prefixSize + int(a[prefixSize-1])*wrapSize + macSize
}
