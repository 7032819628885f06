package backup

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

const testChunk = 64

func TestRoundTripAtChunkBoundaries(t *testing.T) {
	kdf := &memoKDF{}
	for _, n := range []int{0, 1, testChunk - 1, testChunk, testChunk + 1, 3 * testChunk, 3*testChunk + 17} {
		p := payloadOf(n)
		a := archive(t, kdf, p, WriterOptions{Rand: newDetRand("rt"), ChunkSize: testChunk})
		got, err := open(kdf, a, pass)
		if err != nil {
			t.Fatalf("size %d: %v", n, err)
		}
		if !bytes.Equal(got, p) {
			t.Fatalf("size %d: payload differs", n)
		}
		chunks := max(1, (n+testChunk-1)/testChunk)
		if want := headerLen(a) + n + chunks*16; len(a) != want {
			t.Fatalf("size %d: archive of %d bytes, want %d", n, len(a), want)
		}
	}
}

func TestRoundTripWithRealArgon2AndDefaultChunks(t *testing.T) {
	p := payloadOf(3*DefaultChunkSize + 5)
	var buf bytes.Buffer
	w, err := NewWriter(&buf, pass, WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Write in odd pieces to exercise buffering.
	for rest := p; len(rest) > 0; {
		n := min(len(rest), 1000)
		if _, err := w.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := w.Write([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write after Close error = %v, want ErrClosed", err)
	}
	r, err := NewReader(bytes.NewReader(buf.Bytes()), pass)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, p) {
		t.Fatalf("ReadAll: %v, equal %v", err, bytes.Equal(got, p))
	}
	if _, err := NewReader(bytes.NewReader(buf.Bytes()), []byte("wrong passphrase")); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("wrong passphrase error = %v, want ErrWrongPassphrase", err)
	}
}

func TestRecoveryKeyOpensArchive(t *testing.T) {
	kdf := &memoKDF{}
	rk, err := NewRecoveryKey(newDetRand("rk"))
	if err != nil {
		t.Fatal(err)
	}
	p := payloadOf(200)
	a := archive(t, kdf, p, WriterOptions{Rand: newDetRand("rk-archive"), ChunkSize: testChunk, RecoveryKey: rk})
	parsed, err := ParseRecoveryKey(strings.ToLower(strings.ReplaceAll(rk.String(), "-", " ")))
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRecoveryReader(bytes.NewReader(a), parsed)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, p) {
		t.Fatalf("recovery read: %v", err)
	}
	if got, err := open(kdf, a, pass); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("passphrase read of an archive with a recovery key: %v", err)
	}
	other, _ := NewRecoveryKey(newDetRand("other"))
	if _, err := NewRecoveryReader(bytes.NewReader(a), other); !errors.Is(err, ErrWrongRecoveryKey) {
		t.Fatalf("wrong recovery key error = %v, want ErrWrongRecoveryKey", err)
	}
	plain := archive(t, kdf, p, WriterOptions{Rand: newDetRand("no-rk"), ChunkSize: testChunk})
	if _, err := NewRecoveryReader(bytes.NewReader(plain), rk); !errors.Is(err, ErrNoRecoveryKey) {
		t.Fatalf("archive without recovery key error = %v, want ErrNoRecoveryKey", err)
	}
}

func TestRecoveryKeyTextCatchesEveryTypo(t *testing.T) {
	rk, _ := NewRecoveryKey(newDetRand("typo"))
	s := rk.String()
	if len(s) != 14*4+13 {
		t.Fatalf("recovery key text %q has length %d", s, len(s))
	}
	for i := range s {
		if s[i] == '-' {
			continue
		}
		for _, c := range recoveryAlphabet {
			if byte(c) == s[i] {
				continue
			}
			typo := s[:i] + string(c) + s[i+1:]
			if _, err := ParseRecoveryKey(typo); !errors.Is(err, ErrBadRecoveryKey) {
				t.Fatalf("typo at %d (%c): error = %v, want ErrBadRecoveryKey", i, c, err)
			}
		}
	}
	for _, bad := range []string{"", s[:len(s)-1], s + "0", strings.Replace(s, s[:1], "U", 1)} {
		if _, err := ParseRecoveryKey(bad); !errors.Is(err, ErrBadRecoveryKey) {
			t.Fatalf("ParseRecoveryKey(%q) error = %v", bad, err)
		}
	}
}

func TestWeakParamsAreRefusedOnWriteAndRead(t *testing.T) {
	kdf := &memoKDF{}
	for _, p := range []Params{{2, 64 << 10, 4}, {3, 32 << 10, 4}, {3, 64 << 10, 1}} {
		if _, err := newWriter(io.Discard, pass, WriterOptions{Params: p}, kdf.IDKey); !errors.Is(err, ErrWeakParams) {
			t.Fatalf("writer with %+v: error = %v, want ErrWeakParams", p, err)
		}
	}
	a := archive(t, kdf, payloadOf(10), WriterOptions{Rand: newDetRand("weak"), ChunkSize: testChunk})
	patch := func(off int, v []byte) []byte {
		b := bytes.Clone(a)
		copy(b[off:], v)
		return b
	}
	for name, b := range map[string][]byte{
		"t=2":     patch(6, binary.BigEndian.AppendUint32(nil, 2)),
		"m=32MiB": patch(10, binary.BigEndian.AppendUint32(nil, 32<<10)),
		"p=1":     patch(14, []byte{1}),
		"t=0,m=8": patch(6, append(binary.BigEndian.AppendUint32(nil, 0), 0, 0, 0, 8)),
	} {
		if _, err := ReadHeader(bytes.NewReader(b)); !errors.Is(err, ErrWeakParams) {
			t.Fatalf("%s: error = %v, want ErrWeakParams", name, err)
		}
	}
	stronger := Params{Time: 4, MemoryKiB: 64 << 10, Threads: 4}
	b := archive(t, kdf, payloadOf(10), WriterOptions{Rand: newDetRand("strong"), ChunkSize: testChunk, Params: stronger})
	h, err := ReadHeader(bytes.NewReader(b))
	if err != nil || h.Params() != stronger {
		t.Fatalf("stronger params: %v %+v", err, h.Params())
	}
}

// chunks splits an archive into header and ciphertext chunks.
func chunks(a []byte, chunkSize int) (hdr []byte, cs [][]byte) {
	n := headerLen(a)
	hdr, rest := a[:n], a[n:]
	for len(rest) > 0 {
		k := min(len(rest), chunkSize+16)
		cs = append(cs, rest[:k])
		rest = rest[k:]
	}
	return hdr, cs
}

func join(hdr []byte, cs ...[]byte) []byte {
	out := bytes.Clone(hdr)
	for _, c := range cs {
		out = append(out, c...)
	}
	return out
}

func TestTruncationIsDetected(t *testing.T) {
	kdf := &memoKDF{}
	a := archive(t, kdf, payloadOf(3*testChunk+10), WriterOptions{Rand: newDetRand("trunc"), ChunkSize: testChunk})
	k := unlockKey(t, kdf, a)
	hdr, cs := chunks(a, testChunk)
	// Dropping whole final chunks, including all of them.
	for keep := len(cs) - 1; keep >= 0; keep-- {
		if _, err := openWithKey(k, join(hdr, cs[:keep]...)); !errors.Is(err, ErrTruncated) {
			t.Fatalf("kept %d of %d chunks: error = %v, want ErrTruncated", keep, len(cs), err)
		}
	}
	// Cutting at every byte.
	for n := range len(a) {
		var err error
		if n < len(hdr) {
			_, err = open(kdf, a[:n], pass)
		} else {
			_, err = openWithKey(k, a[:n])
		}
		if !isTyped(err) {
			t.Fatalf("cut at %d: error = %v, want a typed error", n, err)
		}
	}
	// With a full-size final chunk, dropping it is still truncation.
	b := archive(t, kdf, payloadOf(2*testChunk), WriterOptions{Rand: newDetRand("trunc-full"), ChunkSize: testChunk})
	kb := unlockKey(t, kdf, b)
	hb, cb := chunks(b, testChunk)
	if _, err := openWithKey(kb, join(hb, cb[0])); !errors.Is(err, ErrTruncated) {
		t.Fatalf("dropped full final chunk: error = %v, want ErrTruncated", err)
	}
	if _, err := openWithKey(kb, append(bytes.Clone(b), 0)); !errors.Is(err, ErrChunkAuth) {
		t.Fatalf("trailing byte: error = %v, want ErrChunkAuth", err)
	}
}

func TestChunkReorderIsDetected(t *testing.T) {
	kdf := &memoKDF{}
	a := archive(t, kdf, payloadOf(3*testChunk+10), WriterOptions{Rand: newDetRand("reorder"), ChunkSize: testChunk})
	k := unlockKey(t, kdf, a)
	hdr, cs := chunks(a, testChunk)
	for _, order := range [][]int{{1, 0, 2, 3}, {0, 2, 1, 3}, {0, 1, 3, 2}, {0, 0, 1, 2, 3}, {0, 1, 2, 2, 3}} {
		var re [][]byte
		for _, i := range order {
			re = append(re, cs[i])
		}
		if _, err := openWithKey(k, join(hdr, re...)); !errors.Is(err, ErrChunkAuth) {
			t.Fatalf("order %v: error = %v, want ErrChunkAuth", order, err)
		}
	}
}

// sameKeyRand yields the same master key and salt as another archive but
// a different archive ID.
func sameKeyRand(archiveID byte) io.Reader {
	b := make([]byte, keySize+saltSize+archiveIDSize)
	newDetRand("same-key").Read(b[:keySize+saltSize])
	for i := keySize + saltSize; i < len(b); i++ {
		b[i] = archiveID
	}
	return bytes.NewReader(b)
}

func TestChunkSwapBetweenArchivesOfSameKeyIsDetected(t *testing.T) {
	kdf := &memoKDF{}
	p := payloadOf(3 * testChunk)
	a := archive(t, kdf, p, WriterOptions{Rand: sameKeyRand(1), ChunkSize: testChunk})
	b := archive(t, kdf, p, WriterOptions{Rand: sameKeyRand(2), ChunkSize: testChunk})
	ha, ca := chunks(a, testChunk)
	hb, cb := chunks(b, testChunk)
	if !bytes.Equal(ha[15:31], hb[15:31]) {
		t.Fatal("test setup: salts differ")
	}
	ka := unlockKey(t, kdf, a)
	for i := range ca {
		mixed := append(append(append([][]byte{}, ca[:i]...), cb[i]), ca[i+1:]...)
		if _, err := openWithKey(ka, join(ha, mixed...)); !errors.Is(err, ErrChunkAuth) {
			t.Fatalf("chunk %d from the other archive: error = %v, want ErrChunkAuth", i, err)
		}
	}
	// The other archive's header (valid under the same master key) in
	// front of this payload fails at the first chunk.
	if _, err := openWithKey(ka, join(hb, ca...)); !errors.Is(err, ErrChunkAuth) {
		t.Fatalf("other header: error = %v, want ErrChunkAuth", err)
	}
}

// TestEveryHeaderByteFlipIsRefused flips each header byte (of an archive
// with a recovery key) and opens it with the passphrase, the recovery key
// and a previously unlocked key: every attempt fails with a typed error.
func TestEveryHeaderByteFlipIsRefused(t *testing.T) {
	kdf := &memoKDF{}
	rk, _ := NewRecoveryKey(newDetRand("flip-rk"))
	a := archive(t, kdf, payloadOf(100), WriterOptions{Rand: newDetRand("flip-hdr"), ChunkSize: testChunk, RecoveryKey: rk})
	k := unlockKey(t, kdf, a)
	for i := range headerLen(a) {
		for _, m := range []byte{0x01, 0xff} {
			b := bytes.Clone(a)
			b[i] ^= m
			// Each flipped salt or parameter costs a real Argon2id run,
			// so the passphrase path takes one mask per byte.
			if m == 0xff {
				if _, err := open(kdf, b, pass); !isTyped(err) {
					t.Fatalf("byte %d mask %#x, passphrase: error = %v", i, m, err)
				}
			}
			if _, err := NewRecoveryReader(bytes.NewReader(b), rk); !isTyped(err) {
				t.Fatalf("byte %d mask %#x, recovery key: error = %v", i, m, err)
			}
			if _, err := openWithKey(k, b); !isTyped(err) {
				t.Fatalf("byte %d mask %#x, unlocked key: error = %v", i, m, err)
			}
		}
	}
}

func TestEveryChunkByteFlipIsRefused(t *testing.T) {
	kdf := &memoKDF{}
	a := archive(t, kdf, payloadOf(2*testChunk+30), WriterOptions{Rand: newDetRand("flip-chunk"), ChunkSize: testChunk})
	k := unlockKey(t, kdf, a)
	for i := headerLen(a); i < len(a); i++ {
		for _, m := range []byte{0x01, 0x80, 0xff} {
			b := bytes.Clone(a)
			b[i] ^= m
			if _, err := openWithKey(k, b); !errors.Is(err, ErrChunkAuth) {
				t.Fatalf("byte %d mask %#x: error = %v, want ErrChunkAuth", i, m, err)
			}
		}
	}
}

func TestReaderNeverReturnsUnauthenticatedPlaintext(t *testing.T) {
	kdf := &memoKDF{}
	p := payloadOf(3 * testChunk)
	a := archive(t, kdf, p, WriterOptions{Rand: newDetRand("partial"), ChunkSize: testChunk})
	k := unlockKey(t, kdf, a)
	b := bytes.Clone(a)
	b[len(b)-1] ^= 1 // corrupt the final chunk
	got, err := openWithKey(k, b)
	if !errors.Is(err, ErrChunkAuth) {
		t.Fatalf("error = %v", err)
	}
	if len(got) != 2*testChunk || !bytes.Equal(got, p[:2*testChunk]) {
		t.Fatalf("returned %d bytes before the bad chunk, want the %d authenticated ones", len(got), 2*testChunk)
	}
}

func TestNotABackupAndUnknownVersion(t *testing.T) {
	if _, err := ReadHeader(strings.NewReader("hello world")); !errors.Is(err, ErrNotBackup) {
		t.Fatalf("error = %v, want ErrNotBackup", err)
	}
	if _, err := ReadHeader(strings.NewReader(Magic + "\x02" + strings.Repeat("\x00", 200))); !errors.Is(err, ErrVersion) {
		t.Fatalf("error = %v, want ErrVersion", err)
	}
	if _, err := ReadHeader(strings.NewReader("")); !errors.Is(err, ErrNotBackup) {
		t.Fatalf("empty: error = %v, want ErrNotBackup", err)
	}
}

func ExampleNewWriter() {
	var archive bytes.Buffer
	w, _ := NewWriter(&archive, []byte("passphrase"), WriterOptions{})
	fmt.Fprint(w, "history")
	w.Close()
	r, _ := NewReader(&archive, []byte("passphrase"))
	b, _ := io.ReadAll(r)
	fmt.Println(string(b))
	// Output: history
}
