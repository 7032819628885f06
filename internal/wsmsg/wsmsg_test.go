package wsmsg

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestReadReturnsEachMessageWholeAndOwned sends messages of many sizes, some larger than the pooled buffers,
// and checks each arrives whole, with its type, in a slice later reads do not overwrite; and that the read
// limit still holds.
func TestReadReturnsEachMessageWholeAndOwned(t *testing.T) {
	sizes := []int{0, 1, 511, 512, 513, 4096, 70_000, maxPooled + 1, 3}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for i, n := range sizes {
			typ := websocket.MessageBinary
			if i%2 == 0 {
				typ = websocket.MessageText
			}
			if err := c.Write(r.Context(), typ, bytes.Repeat([]byte{byte('a' + i)}, n)); err != nil {
				return
			}
		}
		_ = c.Write(r.Context(), websocket.MessageText, make([]byte, 2000)) // over the client's limit
		_, _, _ = c.Read(r.Context())
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(maxPooled + 1)
	var got [][]byte
	for i, n := range sizes {
		typ, msg, err := Read(ctx, c)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		want := websocket.MessageBinary
		if i%2 == 0 {
			want = websocket.MessageText
		}
		if typ != want || len(msg) != n {
			t.Fatalf("message %d: type %v, %d bytes; want %v, %d", i, typ, len(msg), want, n)
		}
		got = append(got, msg)
	}
	for i, msg := range got {
		if !bytes.Equal(msg, bytes.Repeat([]byte{byte('a' + i)}, sizes[i])) {
			t.Fatalf("message %d was overwritten by a later read", i)
		}
	}
	c.SetReadLimit(1000)
	if _, _, err := Read(ctx, c); err == nil {
		t.Fatal("message over the read limit was read")
	}
}
