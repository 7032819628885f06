package gateway

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// maxBatchBytes is how much one coalesced write to a client may hold; the writer flushes when a batch reaches it.
const maxBatchBytes = 256 << 10

// batchConn is the hijacked TCP connection under a client WebSocket. Between hold and release, what the
// WebSocket library writes (it flushes after every message) is collected, and release sends it with one write:
// the connection's writer drains its whole queue into one system call instead of one per frame. Outside a
// batch, writes go straight through. All writes are serialised, so bytes leave in the order written.
type batchConn struct {
	net.Conn
	mu   sync.Mutex
	held bool
	buf  []byte
}

// Write implements net.Conn.
func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.held {
		b.buf = append(b.buf, p...)
		return len(p), nil
	}
	return b.Conn.Write(p)
}

// hold starts collecting writes.
func (b *batchConn) hold() {
	b.mu.Lock()
	b.held = true
	b.mu.Unlock()
}

// buffered returns how many bytes the current batch holds.
func (b *batchConn) buffered() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.buf)
}

// release ends the batch and writes what it collected, within timeout; the write is cut at once when ctx ends
// (the connection is closed as a slow consumer, or the node shuts down).
func (b *batchConn) release(ctx context.Context, timeout time.Duration) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.held = false
	if len(b.buf) == 0 {
		return nil
	}
	_ = b.Conn.SetWriteDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, func() { _ = b.Conn.SetWriteDeadline(time.Unix(1, 0)) })
	_, err := b.Conn.Write(b.buf)
	stop()
	_ = b.Conn.SetWriteDeadline(time.Time{})
	if cap(b.buf) > 2*maxBatchBytes {
		b.buf = nil
	} else {
		b.buf = b.buf[:0]
	}
	return err
}

// batchWriter wraps the ResponseWriter given to websocket.Accept so that the hijacked connection is a
// batchConn.
type batchWriter struct {
	http.ResponseWriter
	bc *batchConn
}

// Hijack implements http.Hijacker.
func (w *batchWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if err := brw.Writer.Flush(); err != nil {
		_ = c.Close()
		return nil, nil, errors.Join(errors.New("gateway: flush before hijack"), err)
	}
	w.bc = &batchConn{Conn: c}
	brw.Writer.Reset(w.bc)
	return w.bc, brw, nil
}

// Unwrap lets http.ResponseController reach the server's ResponseWriter.
func (w *batchWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
