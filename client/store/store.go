// Package store keeps a gridchat client's local state (keys, sessions, contacts, conversations, messages) in
// one directory on disk, encrypted at rest.
//
// The state is a set of buckets of key/value pairs held in memory and persisted as an append-only log of
// encrypted batches. Each batch is sealed with XChaCha20-Poly1305 under the caller's 32-byte store key; its
// associated data binds the file's random ID and the batch's index, so batches cannot be reordered, dropped
// from the middle or spliced in from another file without Open failing. A batch torn by a crash at the end of
// the log is discarded. When the log holds much more than the live state, it is rewritten (compacted) into a
// fresh file that replaces the old one atomically.
//
// File format (all integers big-endian):
//
//	header: "GCST" | version (1) | file ID (16)
//	record: length (uint32, of what follows) | nonce (24) | ciphertext
//	batch plaintext: op count (uint32), then per op:
//	  kind (1 = put, 2 = delete) | bucket (uint16 length + bytes) | key (uint16 length + bytes)
//	  | value (uint32 length + bytes; puts only)
//	associated data: "gridchat/v1/store-batch" | header | record index (uint64)
//
// Record 0 is always an empty batch, so a wrong key is detected on Open (ErrWrongKey) even for an empty store.
package store

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"golang.org/x/crypto/chacha20poly1305"
)

// Sentinel errors.
var (
	// ErrWrongKey means the store key does not open the store.
	ErrWrongKey = errors.New("store: wrong key")
	// ErrCorrupt means the log is damaged somewhere other than a torn final record.
	ErrCorrupt = errors.New("store: corrupt")
	// ErrClosed means the store was closed.
	ErrClosed = errors.New("store: closed")
	// ErrTooLarge means a bucket name, key or value is over its cap.
	ErrTooLarge = errors.New("store: too large")
)

// Caps and format constants.
const (
	// KeySize is the size of a store key.
	KeySize = chacha20poly1305.KeySize
	// MaxNameLen caps bucket names and keys.
	MaxNameLen = 1024
	// MaxValueLen caps one value.
	MaxValueLen = 16 << 20
	// MaxBatchLen caps the encoded size of one batch.
	MaxBatchLen = 64 << 20

	fileName    = "state.log"
	tmpName     = "state.log.tmp"
	magic       = "GCST"
	version     = 1
	fileIDSize  = 16
	headerSize  = len(magic) + 1 + fileIDSize
	labelBatch  = "gridchat/v1/store-batch"
	opPut       = 1
	opDelete    = 2
	minCompact  = 1 << 20
	compactRate = 3 // compact when the log is this many times larger than the live state
)

// Options tune a store. The zero value is the safe default.
type Options struct {
	// NoSync skips fsync after each batch (for tests and benchmarks; a crash may then lose recent batches).
	NoSync bool
}

// Store is an encrypted key/value store in one directory. It is safe for concurrent use.
type Store struct {
	mu       sync.Mutex
	dir      string
	aead     cipherAEAD
	opts     Options
	f        *os.File
	header   []byte
	next     uint64 // index of the next record
	logSize  int64
	liveSize int64
	data     map[string]map[string][]byte
	closed   bool
}

type cipherAEAD interface {
	Seal(dst, nonce, plaintext, additionalData []byte) []byte
	Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error)
	NonceSize() int
	Overhead() int
}

// Open opens (or creates) the store in dir with key. It returns ErrWrongKey if key does not open an existing
// store and ErrCorrupt if the log was tampered with.
func Open(dir string, key []byte, opts Options) (*Store, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("store: open %s: key of %d bytes, want %d", dir, len(key), KeySize)
	}
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	s := &Store{dir: dir, aead: aead, opts: opts, data: map[string]map[string][]byte{}}
	// A leftover temporary file is an interrupted compaction; the old log is still whole.
	_ = os.Remove(filepath.Join(dir, tmpName))
	path := filepath.Join(dir, fileName)
	f, err := os.OpenFile(path, os.O_RDWR, 0o600)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := s.create(); err != nil {
			return nil, fmt.Errorf("store: open %s: %w", dir, err)
		}
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	s.f = f
	if err := s.load(); err != nil {
		f.Close()
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	return s, nil
}

// create writes a fresh log holding the current in-memory state to the temporary file and renames it over the
// log, then reopens it for appending.
func (s *Store) create() error {
	tmp := filepath.Join(s.dir, tmpName)
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	header := make([]byte, headerSize)
	copy(header, magic)
	header[len(magic)] = version
	if _, err := rand.Read(header[len(magic)+1:]); err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	if _, err := w.Write(header); err != nil {
		return err
	}
	size := int64(headerSize)
	// Record 0: empty batch (key check). Record 1: the whole live state, if any.
	rec, err := s.seal(header, 0, encodeBatch(nil))
	if err != nil {
		return err
	}
	if _, err := w.Write(rec); err != nil {
		return err
	}
	size += int64(len(rec))
	next := uint64(1)
	if ops := s.snapshotOps(); len(ops) > 0 {
		rec, err := s.seal(header, 1, encodeBatch(ops))
		if err != nil {
			return err
		}
		if _, err := w.Write(rec); err != nil {
			return err
		}
		size += int64(len(rec))
		next = 2
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, fileName)); err != nil {
		return err
	}
	syncDir(s.dir)
	ok = true
	if s.f != nil {
		s.f.Close()
	}
	s.f, s.header, s.next, s.logSize = f, header, next, size
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// load replays the log into memory. A torn final record is cut off.
func (s *Store) load() error {
	r := bufio.NewReader(s.f)
	header := make([]byte, headerSize)
	if _, err := io.ReadFull(r, header); err != nil || string(header[:len(magic)]) != magic {
		return fmt.Errorf("%w: bad header", ErrCorrupt)
	}
	if header[len(magic)] != version {
		return fmt.Errorf("%w: unknown version %d", ErrCorrupt, header[len(magic)])
	}
	s.header = header
	off := int64(headerSize)
	for idx := uint64(0); ; idx++ {
		var lb [4]byte
		_, err := io.ReadFull(r, lb[:])
		if err == io.EOF {
			break
		}
		if err != nil { // a torn length prefix
			return s.truncate(off, idx)
		}
		ln := int64(binary.BigEndian.Uint32(lb[:]))
		if ln > MaxBatchLen+int64(s.aead.NonceSize()+s.aead.Overhead()) {
			return fmt.Errorf("%w: record %d of %d bytes", ErrCorrupt, idx, ln)
		}
		body := make([]byte, ln)
		if _, err := io.ReadFull(r, body); err != nil {
			return s.truncate(off, idx)
		}
		pt, err := s.open(idx, body)
		if err != nil {
			if idx == 0 {
				return ErrWrongKey
			}
			// A record that is whole but does not authenticate is tampering, unless it is the last one and a
			// crash left garbage: only a record followed by nothing is forgiven.
			if _, perr := r.Peek(1); perr == io.EOF {
				return s.truncate(off, idx)
			}
			return fmt.Errorf("%w: record %d does not authenticate", ErrCorrupt, idx)
		}
		ops, err := decodeBatch(pt)
		if err != nil {
			return fmt.Errorf("%w: record %d: %v", ErrCorrupt, idx, err)
		}
		if idx == 0 && len(ops) != 0 {
			return fmt.Errorf("%w: record 0 not empty", ErrCorrupt)
		}
		s.apply(ops)
		off += 4 + ln
		s.next = idx + 1
	}
	if s.next == 0 {
		return fmt.Errorf("%w: no key-check record", ErrCorrupt)
	}
	s.logSize = off
	if _, err := s.f.Seek(off, io.SeekStart); err != nil {
		return err
	}
	return nil
}

func (s *Store) truncate(off int64, idx uint64) error {
	if idx == 0 {
		return fmt.Errorf("%w: no key-check record", ErrCorrupt)
	}
	if err := s.f.Truncate(off); err != nil {
		return err
	}
	s.next, s.logSize = idx, off
	_, err := s.f.Seek(off, io.SeekStart)
	return err
}

func (s *Store) ad(header []byte, idx uint64) []byte {
	ad := make([]byte, 0, len(labelBatch)+len(header)+8)
	ad = append(ad, labelBatch...)
	ad = append(ad, header...)
	return binary.BigEndian.AppendUint64(ad, idx)
}

func (s *Store) seal(header []byte, idx uint64, pt []byte) ([]byte, error) {
	ns := s.aead.NonceSize()
	rec := make([]byte, 4+ns, 4+ns+len(pt)+s.aead.Overhead())
	if _, err := rand.Read(rec[4 : 4+ns]); err != nil {
		return nil, err
	}
	rec = s.aead.Seal(rec, rec[4:4+ns], pt, s.ad(header, idx))
	binary.BigEndian.PutUint32(rec[:4], uint32(len(rec)-4))
	return rec, nil
}

func (s *Store) open(idx uint64, body []byte) ([]byte, error) {
	ns := s.aead.NonceSize()
	if len(body) < ns+s.aead.Overhead() {
		return nil, ErrCorrupt
	}
	return s.aead.Open(nil, body[:ns], body[ns:], s.ad(s.header, idx))
}

type op struct {
	kind        byte
	bucket, key string
	value       []byte
}

func encodeBatch(ops []op) []byte {
	var b bytes.Buffer
	b.Write(binary.BigEndian.AppendUint32(nil, uint32(len(ops))))
	for _, o := range ops {
		b.WriteByte(o.kind)
		b.Write(binary.BigEndian.AppendUint16(nil, uint16(len(o.bucket))))
		b.WriteString(o.bucket)
		b.Write(binary.BigEndian.AppendUint16(nil, uint16(len(o.key))))
		b.WriteString(o.key)
		if o.kind == opPut {
			b.Write(binary.BigEndian.AppendUint32(nil, uint32(len(o.value))))
			b.Write(o.value)
		}
	}
	return b.Bytes()
}

func decodeBatch(p []byte) ([]op, error) {
	take := func(n int) ([]byte, bool) {
		if n < 0 || len(p) < n {
			return nil, false
		}
		v := p[:n]
		p = p[n:]
		return v, true
	}
	h, ok := take(4)
	if !ok {
		return nil, errors.New("truncated batch")
	}
	n := binary.BigEndian.Uint32(h)
	if int64(n) > int64(len(p)) {
		return nil, errors.New("bad op count")
	}
	ops := make([]op, 0, n)
	for range n {
		k, ok := take(1)
		if !ok || (k[0] != opPut && k[0] != opDelete) {
			return nil, errors.New("bad op")
		}
		o := op{kind: k[0]}
		for _, dst := range []*string{&o.bucket, &o.key} {
			lb, ok := take(2)
			if !ok {
				return nil, errors.New("truncated op")
			}
			v, ok := take(int(binary.BigEndian.Uint16(lb)))
			if !ok || len(v) > MaxNameLen {
				return nil, errors.New("truncated op")
			}
			*dst = string(v)
		}
		if o.kind == opPut {
			lb, ok := take(4)
			if !ok {
				return nil, errors.New("truncated op")
			}
			ln := binary.BigEndian.Uint32(lb)
			v, ok := take(int(min(ln, MaxValueLen+1)))
			if !ok || ln > MaxValueLen {
				return nil, errors.New("bad value")
			}
			o.value = bytes.Clone(v)
		}
		ops = append(ops, o)
	}
	if len(p) != 0 {
		return nil, errors.New("trailing bytes")
	}
	return ops, nil
}

func (s *Store) apply(ops []op) {
	for _, o := range ops {
		b := s.data[o.bucket]
		if old, ok := b[o.key]; ok {
			s.liveSize -= int64(len(o.bucket) + len(o.key) + len(old) + 9)
		}
		switch o.kind {
		case opPut:
			if b == nil {
				b = map[string][]byte{}
				s.data[o.bucket] = b
			}
			b[o.key] = o.value
			s.liveSize += int64(len(o.bucket) + len(o.key) + len(o.value) + 9)
		case opDelete:
			delete(b, o.key)
			if len(b) == 0 {
				delete(s.data, o.bucket)
			}
		}
	}
}

func (s *Store) snapshotOps() []op {
	var ops []op
	for _, bucket := range slices.Sorted(mapsKeys(s.data)) {
		for _, key := range slices.Sorted(mapsKeys(s.data[bucket])) {
			ops = append(ops, op{kind: opPut, bucket: bucket, key: key, value: s.data[bucket][key]})
		}
	}
	return ops
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// Batch collects writes that Update applies atomically: after a crash either all of them are in the store or
// none is.
type Batch struct {
	ops  []op
	size int
	err  error
}

// Put sets bucket/key to a copy of value.
func (b *Batch) Put(bucket, key string, value []byte) {
	if b.err != nil {
		return
	}
	if len(bucket) > MaxNameLen || len(key) > MaxNameLen || len(value) > MaxValueLen {
		b.err = fmt.Errorf("%w: %s/%.32s", ErrTooLarge, bucket, key)
		return
	}
	b.size += len(bucket) + len(key) + len(value) + 9
	b.ops = append(b.ops, op{kind: opPut, bucket: bucket, key: key, value: bytes.Clone(value)})
}

// Delete removes bucket/key (a missing key is no error).
func (b *Batch) Delete(bucket, key string) {
	if b.err != nil {
		return
	}
	if len(bucket) > MaxNameLen || len(key) > MaxNameLen {
		b.err = fmt.Errorf("%w: %s/%.32s", ErrTooLarge, bucket, key)
		return
	}
	b.size += len(bucket) + len(key) + 5
	b.ops = append(b.ops, op{kind: opDelete, bucket: bucket, key: key})
}

// Update applies the writes f makes to a batch, atomically and durably (unless Options.NoSync).
func (s *Store) Update(f func(b *Batch) error) error {
	var b Batch
	if err := f(&b); err != nil {
		return err
	}
	if b.err != nil {
		return b.err
	}
	if len(b.ops) == 0 {
		return nil
	}
	if b.size > MaxBatchLen {
		return fmt.Errorf("%w: batch of %d bytes", ErrTooLarge, b.size)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	rec, err := s.seal(s.header, s.next, encodeBatch(b.ops))
	if err != nil {
		return fmt.Errorf("store: write: %w", err)
	}
	if _, err := s.f.Write(rec); err != nil {
		// Cut off whatever part was written so the next batch starts at a record boundary.
		_ = s.f.Truncate(s.logSize)
		_, _ = s.f.Seek(s.logSize, io.SeekStart)
		return fmt.Errorf("store: write: %w", err)
	}
	if !s.opts.NoSync {
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("store: sync: %w", err)
		}
	}
	s.next++
	s.logSize += int64(len(rec))
	s.apply(b.ops)
	if s.logSize > minCompact && s.logSize > compactRate*s.liveSize {
		if err := s.create(); err != nil {
			return fmt.Errorf("store: compact: %w", err)
		}
	}
	return nil
}

// Put sets bucket/key to value.
func (s *Store) Put(bucket, key string, value []byte) error {
	return s.Update(func(b *Batch) error { b.Put(bucket, key, value); return nil })
}

// Delete removes bucket/key.
func (s *Store) Delete(bucket, key string) error {
	return s.Update(func(b *Batch) error { b.Delete(bucket, key); return nil })
}

// Get returns a copy of the value of bucket/key and whether it exists.
func (s *Store) Get(bucket, key string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.data[bucket][key]
	return bytes.Clone(v), ok
}

// Keys returns the keys of bucket in ascending order.
func (s *Store) Keys(bucket string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(mapsKeys(s.data[bucket]))
}

// Len returns the number of keys in bucket.
func (s *Store) Len(bucket string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.data[bucket])
}

// Close closes the log file. It is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	clear(s.data)
	return s.f.Close()
}
