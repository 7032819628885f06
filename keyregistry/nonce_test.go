package keyregistry

import (
	"errors"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTestClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func TestNonceIsSingleUseAndBoundToConnection(t *testing.T) {
	clk := newTestClock()
	s := newNonceStore(clk.now, 30*time.Second, 100, 4)
	n, exp, err := s.issue("conn-a", 7)
	if err != nil {
		t.Fatal(err)
	}
	if !exp.Equal(clk.t.Add(30 * time.Second)) {
		t.Fatalf("expiry %v", exp)
	}
	if _, err := s.consume("conn-b", n); !errors.Is(err, ErrNonceOtherConn) {
		t.Fatalf("other connection: got %v", err)
	}
	if g, err := s.consume("conn-a", n); err != nil || g != 7 {
		t.Fatalf("rightful use after a foreign attempt: %v, %v", g, err)
	}
	if _, err := s.consume("conn-a", n); !errors.Is(err, ErrNonceReplayed) {
		t.Fatalf("second use: got %v", err)
	}
	var never Nonce
	if _, err := s.consume("conn-a", never); !errors.Is(err, ErrNonceUnknown) {
		t.Fatalf("never issued: got %v", err)
	}
}

func TestNonceExpiresAndCannotBeRetried(t *testing.T) {
	clk := newTestClock()
	s := newNonceStore(clk.now, 30*time.Second, 100, 4)
	n, _, _ := s.issue("c", nil)
	clk.advance(30 * time.Second)
	if _, err := s.consume("c", n); !errors.Is(err, ErrNonceExpired) {
		t.Fatalf("at expiry: got %v", err)
	}
	if _, err := s.consume("c", n); !errors.Is(err, ErrNonceReplayed) {
		t.Fatalf("after a refused expired use: got %v", err)
	}
}

func TestNonceStoreIsBounded(t *testing.T) {
	clk := newTestClock()
	s := newNonceStore(clk.now, time.Second, 3, 2)
	first, _, _ := s.issue("c", nil)
	s.issue("c", nil)
	s.issue("c", nil) // evicts first: a connection holds at most 2 live nonces
	if _, err := s.consume("c", first); !errors.Is(err, ErrNonceUnknown) {
		t.Fatalf("evicted nonce: got %v", err)
	}
	s.issue("d", nil)
	if _, _, err := s.issue("e", nil); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("store full: got %v", err)
	}
	clk.advance(time.Hour) // past expiry and tombstone keep: swept on demand
	if _, _, err := s.issue("e", nil); err != nil {
		t.Fatalf("after sweep: %v", err)
	}
	if s.len() != 1 {
		t.Fatalf("len after sweep = %d, want 1", s.len())
	}
}

func TestNonceDropConnKillsLiveNonces(t *testing.T) {
	clk := newTestClock()
	s := newNonceStore(clk.now, time.Minute, 10, 4)
	n, _, _ := s.issue("c", nil)
	s.dropConn("c")
	if _, err := s.consume("c", n); !errors.Is(err, ErrNonceReplayed) {
		t.Fatalf("after connection closed: got %v", err)
	}
}
