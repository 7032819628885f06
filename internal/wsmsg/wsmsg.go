// Package wsmsg reads whole WebSocket messages with less garbage than websocket.Conn.Read, which grows a fresh
// buffer for every message: a message is read into a pooled buffer and handed out as one exact-size copy that
// the caller owns.
package wsmsg

import (
	"bytes"
	"context"
	"sync"

	"github.com/coder/websocket"
)

// maxPooled is the largest buffer kept for reuse; a buffer grown by a larger message is dropped.
const maxPooled = 256 << 10

var pool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// Read reads the next message from c, as c.Read does.
func Read(ctx context.Context, c *websocket.Conn) (websocket.MessageType, []byte, error) {
	typ, r, err := c.Reader(ctx)
	if err != nil {
		return 0, nil, err
	}
	buf := pool.Get().(*bytes.Buffer)
	buf.Reset()
	_, err = buf.ReadFrom(r)
	var msg []byte
	if err == nil {
		msg = bytes.Clone(buf.Bytes())
	}
	if buf.Cap() <= maxPooled {
		pool.Put(buf)
	}
	return typ, msg, err
}
