package backup

import (
	"bytes"
	"crypto/sha256"
	"io"
	"runtime"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
)

// patternReader yields n deterministic bytes without allocating.
type patternReader struct {
	n   int64
	off int64
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	if rest := p.n - p.off; int64(len(b)) > rest {
		b = b[:rest]
	}
	for i := range b {
		x := p.off + int64(i)
		b[i] = byte(x) ^ byte(x>>8) ^ byte(x>>16)
	}
	p.off += int64(len(b))
	return len(b), nil
}

// TestHundredMiBStreamsInBoundedMemory writes a 100 MiB archive into a pipe
// and reads it back on the other end. After setup (two Argon2id runs of
// 64 MiB each, which must be released), the whole stream may allocate less
// than 16 MiB in total, so the heap never holds more than that for it.
func TestHundredMiBStreamsInBoundedMemory(t *testing.T) {
	const size = 100 << 20
	const bound = 16 << 20
	var base, afterSetup, afterStream runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&base)

	pr, pw := io.Pipe()
	type result struct {
		w   *Writer
		err error
	}
	made := make(chan result, 1)
	start := make(chan struct{})
	wrote := make(chan error, 1)
	go func() {
		w, err := NewWriter(pw, pass, WriterOptions{})
		made <- result{w, err}
		if err != nil {
			pw.CloseWithError(err)
			wrote <- err
			return
		}
		<-start
		_, err = io.Copy(w, &patternReader{n: size})
		if err == nil {
			err = w.Close()
		}
		pw.CloseWithError(err)
		wrote <- err
	}()
	r, err := NewReader(pr, pass)
	if err != nil {
		t.Fatal(err)
	}
	if res := <-made; res.err != nil {
		t.Fatal(res.err)
	}
	runtime.GC()
	runtime.ReadMemStats(&afterSetup)
	if grown := int64(afterSetup.HeapAlloc) - int64(base.HeapAlloc); grown > bound {
		t.Fatalf("Argon2id memory not released: live heap grew by %d MiB after setup", grown>>20)
	}
	argonAlloc := afterSetup.TotalAlloc - base.TotalAlloc
	if argonAlloc < 2*64<<20 {
		t.Fatalf("setup allocated %d MiB; expected two 64 MiB Argon2id runs", argonAlloc>>20)
	}

	close(start)
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&afterStream)
	if n != size {
		t.Fatalf("read %d bytes, want %d", n, size)
	}
	want := sha256.New()
	io.Copy(want, &patternReader{n: size})
	if string(h.Sum(nil)) != string(want.Sum(nil)) {
		t.Fatal("payload hash differs")
	}
	streamAlloc := afterStream.TotalAlloc - afterSetup.TotalAlloc
	t.Logf("setup (2× Argon2id) allocated %d MiB, released; 100 MiB stream allocated %d KiB in total",
		argonAlloc>>20, streamAlloc>>10)
	if streamAlloc > bound {
		t.Fatalf("streaming 100 MiB allocated %d MiB, bound %d MiB", streamAlloc>>20, bound>>20)
	}
}

func BenchmarkArgon2idDefaultParams(b *testing.B) {
	p := DefaultParams()
	salt := make([]byte, saltSize)
	for b.Loop() {
		_ = (&memoKDF{}).IDKey(pass, salt, p.Time, p.MemoryKiB, p.Threads, keySize)
	}
}

// BenchmarkStream compares sealing 1 MiB through the archive writer with a
// bare ChaCha20-Poly1305 seal of the same 64 KiB chunks (the baseline).
func BenchmarkStream(b *testing.B) {
	kdf := &memoKDF{}
	data := payloadOf(1 << 20)
	b.Run("bare-aead-seal", func(b *testing.B) {
		aead, _ := chacha20poly1305.New(make([]byte, 32))
		nonce := make([]byte, 12)
		out := make([]byte, 0, DefaultChunkSize+16)
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			for off := 0; off < len(data); off += DefaultChunkSize {
				out = aead.Seal(out[:0], nonce, data[off:off+DefaultChunkSize], nil)
			}
		}
	})
	b.Run("archive-write", func(b *testing.B) {
		w, err := newWriter(io.Discard, pass, WriterOptions{}, kdf.IDKey)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			w.Write(data)
		}
		w.Close()
	})
	b.Run("archive-read", func(b *testing.B) {
		a := archive(b, kdf, data, WriterOptions{})
		k := unlockKey(b, kdf, a)
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			r := bytes.NewReader(a)
			h, err := ReadHeader(r)
			if err != nil {
				b.Fatal(err)
			}
			pr, err := OpenPayload(h, k, r)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, pr); err != nil {
				b.Fatal(err)
			}
		}
	})
}
