package backup

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
)

// WriterOptions configure a Writer. The zero value uses crypto/rand,
// DefaultParams, DefaultChunkSize and no recovery key.
type WriterOptions struct {
	// Rand is the source of the master key, salt and archive ID.
	Rand io.Reader
	// Params are the Argon2id parameters; zero means DefaultParams. Weaker
	// parameters are refused with ErrWeakParams.
	Params Params
	// RecoveryKey, if set, also wraps the master key.
	RecoveryKey *RecoveryKey
	// ChunkSize is the plaintext size of a chunk; zero means
	// DefaultChunkSize.
	ChunkSize int
}

// ErrClosed reports a write to a closed Writer.
var ErrClosed = errors.New("backup: writer closed")

// Writer encrypts an archive as it is written. Close must be called to
// write the final chunk. A Writer is not safe for concurrent use.
type Writer struct {
	w         io.Writer
	aead      cipher.AEAD
	archiveID []byte
	buf       []byte // plaintext of the pending chunk
	out       []byte // ciphertext scratch
	counter   uint64
	closed    bool
	err       error
}

// NewWriter writes an archive header to w and returns a Writer for the
// payload. The passphrase is used once, for Argon2id.
func NewWriter(w io.Writer, passphrase []byte, opts WriterOptions) (*Writer, error) {
	return newWriter(w, passphrase, opts, argon2.IDKey)
}

func newWriter(w io.Writer, passphrase []byte, opts WriterOptions, kdf kdfFunc) (*Writer, error) {
	const op = "backup: new writer"
	if opts.Rand == nil {
		opts.Rand = rand.Reader
	}
	if opts.Params == (Params{}) {
		opts.Params = DefaultParams()
	}
	if opts.ChunkSize == 0 {
		opts.ChunkSize = DefaultChunkSize
	}
	if err := opts.Params.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if opts.ChunkSize < MinChunkSize || opts.ChunkSize > MaxChunkSize {
		return nil, fmt.Errorf("%s: chunk size %d out of [%d, %d]", op, opts.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	secret := make([]byte, keySize+saltSize+archiveIDSize)
	if _, err := io.ReadFull(opts.Rand, secret); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	master, salt, archiveID := secret[:keySize], secret[keySize:keySize+saltSize], secret[keySize+saltSize:]
	defer clear(master)

	nwraps := 1
	if opts.RecoveryKey != nil {
		nwraps = 2
	}
	h := make([]byte, 0, MaxHeaderSize)
	h = append(h, Magic...)
	h = append(h, Version, KDFArgon2id)
	h = binary.BigEndian.AppendUint32(h, opts.Params.Time)
	h = binary.BigEndian.AppendUint32(h, opts.Params.MemoryKiB)
	h = append(h, opts.Params.Threads)
	h = append(h, salt...)
	h = append(h, archiveID...)
	h = binary.BigEndian.AppendUint32(h, uint32(opts.ChunkSize))
	h = append(h, byte(nwraps))
	prefix := h[:prefixSize:prefixSize]

	kek := kdf(passphrase, salt, opts.Params.Time, opts.Params.MemoryKiB, opts.Params.Threads, keySize)
	h, err := appendWrap(h, prefix, WrapPassphrase, kek, master)
	clear(kek)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if opts.RecoveryKey != nil {
		rkek, err := recoveryKEK(opts.RecoveryKey, salt)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		h, err = appendWrap(h, prefix, WrapRecoveryKey, rkek, master)
		clear(rkek)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
	}
	tag, err := headerMAC(master, archiveID, h)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	h = append(h, tag...)
	pk, err := payloadKey(master, archiveID, h)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	aead, err := chacha20poly1305.New(pk)
	clear(pk)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if _, err := w.Write(h); err != nil {
		return nil, fmt.Errorf("%s: write header: %w", op, err)
	}
	return &Writer{
		w:         w,
		aead:      aead,
		archiveID: append([]byte(nil), archiveID...),
		buf:       make([]byte, 0, opts.ChunkSize),
		out:       make([]byte, 0, opts.ChunkSize+chacha20poly1305.Overhead),
	}, nil
}

func appendWrap(h, prefix []byte, typ byte, kek, master []byte) ([]byte, error) {
	aead, err := chacha20poly1305.New(kek)
	if err != nil {
		return nil, err
	}
	h = append(h, typ)
	// Each key-encryption key is unique to this archive's salt and wraps
	// exactly one message, so a fixed nonce is safe.
	return aead.Seal(h, make([]byte, chacha20poly1305.NonceSize), master, wrapAD(prefix, typ)), nil
}

// ArchiveID returns the archive's random ID, for its manifest.
func (w *Writer) ArchiveID() []byte { return append([]byte(nil), w.archiveID...) }

// chunkNonce is the STREAM nonce: an 11-byte big-endian counter and a
// last-chunk flag.
func chunkNonce(n *[chacha20poly1305.NonceSize]byte, counter uint64, last bool) []byte {
	clear(n[:])
	binary.BigEndian.PutUint64(n[3:11], counter)
	if last {
		n[11] = 1
	}
	return n[:]
}

func (w *Writer) flush(last bool) error {
	var n [chacha20poly1305.NonceSize]byte
	w.out = w.aead.Seal(w.out[:0], chunkNonce(&n, w.counter, last), w.buf, nil)
	w.counter++
	w.buf = w.buf[:0]
	if _, err := w.w.Write(w.out); err != nil {
		return fmt.Errorf("backup: write chunk: %w", err)
	}
	return nil
}

// Write encrypts p into the archive.
func (w *Writer) Write(p []byte) (int, error) {
	if w.closed {
		return 0, ErrClosed
	}
	if w.err != nil {
		return 0, w.err
	}
	written := 0
	for len(p) > 0 {
		// A full chunk is written only once more data follows, so the
		// final chunk is never empty unless the whole payload is.
		if len(w.buf) == cap(w.buf) {
			if err := w.flush(false); err != nil {
				w.err = err
				return written, err
			}
		}
		n := copy(w.buf[len(w.buf):cap(w.buf)], p)
		w.buf = w.buf[:len(w.buf)+n]
		p = p[n:]
		written += n
	}
	return written, nil
}

// Close writes the final chunk. It does not close the underlying writer.
// Calling Close again returns nil.
func (w *Writer) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	if w.err != nil {
		return w.err
	}
	return w.flush(true)
}

// Reader decrypts an archive's payload as it is read. A Reader is not safe
// for concurrent use.
type Reader struct {
	r       io.Reader
	aead    cipher.AEAD
	encSize int
	buf     []byte // ciphertext of one chunk plus one byte of look-ahead
	peek    [1]byte
	hasPeek bool   // peek holds a look-ahead byte already read
	plain   []byte // decrypted, unread bytes
	counter uint64
	done    bool
	err     error
}

// NewReader reads the header from r, unlocks it with the passphrase and
// returns a Reader for the payload.
func NewReader(r io.Reader, passphrase []byte) (*Reader, error) {
	h, err := ReadHeader(r)
	if err != nil {
		return nil, err
	}
	k, err := h.Unlock(passphrase)
	if err != nil {
		return nil, err
	}
	defer k.Destroy()
	return OpenPayload(h, k, r)
}

// NewRecoveryReader is NewReader with a recovery key instead of the
// passphrase.
func NewRecoveryReader(r io.Reader, rk *RecoveryKey) (*Reader, error) {
	h, err := ReadHeader(r)
	if err != nil {
		return nil, err
	}
	k, err := h.UnlockRecovery(rk)
	if err != nil {
		return nil, err
	}
	defer k.Destroy()
	return OpenPayload(h, k, r)
}

// OpenPayload returns a Reader for the chunks that follow header h in r,
// using a key unlocked earlier (for instance from the same archive fetched
// again). The key must authenticate h.
func OpenPayload(h *Header, k *Key, r io.Reader) (*Reader, error) {
	if err := h.verify(k); err != nil {
		return nil, err
	}
	pk, err := payloadKey(k.master, h.archiveID, h.raw)
	if err != nil {
		return nil, fmt.Errorf("backup: open payload: %w", err)
	}
	aead, err := chacha20poly1305.New(pk)
	clear(pk)
	if err != nil {
		return nil, fmt.Errorf("backup: open payload: %w", err)
	}
	enc := h.chunkSize + chacha20poly1305.Overhead
	return &Reader{r: r, aead: aead, encSize: enc, buf: make([]byte, enc+1)}, nil
}

// Read returns decrypted payload. It returns io.EOF only after the final
// chunk authenticated; ErrTruncated if the final chunk is missing and
// ErrChunkAuth for any altered, cut, reordered or foreign chunk.
func (r *Reader) Read(p []byte) (int, error) {
	for len(r.plain) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.done {
			return 0, io.EOF
		}
		if err := r.next(); err != nil {
			r.err = err
			return 0, err
		}
	}
	n := copy(p, r.plain)
	r.plain = r.plain[n:]
	return n, nil
}

func (r *Reader) next() error {
	n := 0
	if r.hasPeek {
		r.buf[0] = r.peek[0]
		n = 1
	}
	m, err := io.ReadFull(r.r, r.buf[n:])
	total := n + m
	last := false
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		last = true
	case err != nil:
		return fmt.Errorf("backup: read chunk %d: %w", r.counter, err)
	}
	ct := r.buf[:total]
	r.hasPeek = !last
	if !last {
		ct = r.buf[:r.encSize]
		r.peek[0] = r.buf[r.encSize]
	}
	var nonce [chacha20poly1305.NonceSize]byte
	if !last {
		pt, err := r.aead.Open(ct[:0], chunkNonce(&nonce, r.counter, false), ct, nil)
		if err != nil {
			return fmt.Errorf("backup: chunk %d: %w", r.counter, ErrChunkAuth)
		}
		r.plain = pt
		r.counter++
		return nil
	}
	if total < chacha20poly1305.Overhead {
		if total == 0 && r.counter > 0 {
			return fmt.Errorf("backup: after chunk %d: %w", r.counter-1, ErrTruncated)
		}
		if total == 0 {
			return fmt.Errorf("backup: no chunks: %w", ErrTruncated)
		}
		return fmt.Errorf("backup: chunk %d: %w", r.counter, ErrChunkAuth)
	}
	// Decrypt into scratch space so a failed final attempt can be retried
	// as a non-final chunk to tell truncation from corruption.
	pt, err := r.aead.Open(nil, chunkNonce(&nonce, r.counter, true), ct, nil)
	if err != nil {
		if _, err2 := r.aead.Open(nil, chunkNonce(&nonce, r.counter, false), ct, nil); err2 == nil {
			return fmt.Errorf("backup: after chunk %d: %w", r.counter, ErrTruncated)
		}
		return fmt.Errorf("backup: chunk %d: %w", r.counter, ErrChunkAuth)
	}
	r.plain = pt
	r.counter++
	r.done = true
	return nil
}
