package linkrelay

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/iagon/gridchat/e2ee/link"
	"github.com/iagon/gridchat/gateway"
	"github.com/iagon/gridchat/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newService(t testing.TB, lim Limits, now *time.Time) *Service {
	t.Helper()
	s, err := New(Config{Limits: lim, Clock: func() time.Time { return *now }, Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func call(t testing.TB, connID string, authed bool, v any) *gateway.Call {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return &gateway.Call{Body: b, Authenticated: authed, ConnID: connID}
}

func TestZeroLimitsTakeTheDocumentedDefaults(t *testing.T) {
	var l Limits
	l.fill()
	if l != DefaultLimits() {
		t.Fatalf("filled %+v, want %+v", l, DefaultLimits())
	}
	d := DefaultLimits()
	if d.TTL != 5*time.Minute || d.MaxFrameBytes != link.MaxFrameSize || d.MaxFrames != 64 || d.MaxPerConn != 4 {
		t.Fatalf("defaults %+v differ from docs/PROTOCOL.md §7", d)
	}
	l = Limits{TTL: time.Second, MaxFrames: 3}
	l.fill()
	if l.TTL != time.Second || l.MaxFrames != 3 || l.MaxRendezvous != d.MaxRendezvous {
		t.Fatalf("set fields were overwritten or unset ones not filled: %+v", l)
	}
}

func TestOpenRefusalsHaveTheirCodes(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := newService(t, Limits{MaxRendezvous: 2, MaxPerConn: 1, OpenBurst: 100}, &now)
	ctx := context.Background()
	cases := []struct {
		name   string
		connID string
		authed bool
		body   any
		want   wire.Code // 0: success
	}{
		{"unknown member", "a", true, map[string]any{"rendezvous": []byte("ABCDE"), "role": "host", "x": 1}, wire.CodeBadRequest},
		{"short ID", "a", true, OpenRequest{Rendezvous: []byte("ABCD"), Role: RoleHost}, wire.CodeBadRequest},
		{"long ID", "a", true, OpenRequest{Rendezvous: make([]byte, 65), Role: RoleHost}, wire.CodeBadRequest},
		{"bad role", "a", true, OpenRequest{Rendezvous: []byte("ABCDE"), Role: "guest"}, wire.CodeBadRequest},
		{"unauthenticated host", "a", false, OpenRequest{Rendezvous: []byte("ABCDE"), Role: RoleHost}, wire.CodeUnauthenticated},
		{"host", "a", true, OpenRequest{Rendezvous: []byte("ABCDE"), Role: RoleHost}, 0},
		{"second on one connection", "a", true, OpenRequest{Rendezvous: []byte("FGHJK"), Role: RoleHost}, wire.CodeBusy},
		{"same ID again", "b", true, OpenRequest{Rendezvous: []byte("ABCDE"), Role: RoleHost}, wire.CodeLinkTaken},
		{"join own, over the per-connection cap", "a", false, OpenRequest{Rendezvous: []byte("ABCDE"), Role: RoleJoin}, wire.CodeBusy},
		{"join unknown", "c", false, OpenRequest{Rendezvous: []byte("ZZZZZ"), Role: RoleJoin}, wire.CodeNotFound},
		{"join", "c", false, OpenRequest{Rendezvous: []byte("ABCDE"), Role: RoleJoin}, 0},
		{"third party", "d", false, OpenRequest{Rendezvous: []byte("ABCDE"), Role: RoleJoin}, wire.CodeLinkTaken},
		{"host 2", "e", true, OpenRequest{Rendezvous: []byte("MNPQR"), Role: RoleHost}, 0},
		{"node full", "f", true, OpenRequest{Rendezvous: []byte("STVWX"), Role: RoleHost}, wire.CodeBusy},
	}
	for _, tc := range cases {
		_, err := s.opOpen(ctx, call(t, tc.connID, tc.authed, tc.body))
		var we *wire.Error
		switch {
		case tc.want == 0 && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != 0 && (!errors.As(err, &we) || we.Code != tc.want):
			t.Errorf("%s: %v, want %s", tc.name, err, tc.want)
		}
	}
	if s.Len() != 2 {
		t.Fatalf("%d rendezvous, want 2", s.Len())
	}
	// Connection a ends: its rendezvous goes; e's stays until the TTL.
	s.connClosed("a")
	if s.Len() != 1 {
		t.Fatalf("%d rendezvous after a left, want 1", s.Len())
	}
	now = now.Add(DefaultLimits().TTL)
	if n := s.Sweep(); n != 1 || s.Len() != 0 {
		t.Fatalf("sweep dropped %d, %d left", n, s.Len())
	}
}

func TestCloseIsIdempotentAndStopsTheSweeper(t *testing.T) {
	now := time.Now()
	s := newService(t, Limits{SweepInterval: time.Millisecond}, &now)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// FuzzRequestBodies feeds arbitrary bodies to both operations: nothing panics, and every refusal is a
// *wire.Error a client can read.
func FuzzRequestBodies(f *testing.F) {
	f.Add([]byte(`{"rendezvous":"QUJDREU=","role":"host"}`), true)
	f.Add([]byte(`{"rendezvous":"QUJDREU=","role":"join"}`), false)
	f.Add([]byte(`{"rendezvous":"QUJDREU=","frame":"AQI="}`), true)
	f.Add([]byte(`{"rendezvous":null,"frame":""}`), false)
	f.Fuzz(func(t *testing.T, body []byte, authed bool) {
		now := time.Unix(1_800_000_000, 0)
		s, err := New(Config{Clock: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		ctx := context.Background()
		// A host so that sends and joins have something to find.
		if _, err := s.opOpen(ctx, call(t, "host", true, OpenRequest{Rendezvous: []byte("ABCDE"), Role: RoleHost})); err != nil {
			t.Fatal(err)
		}
		for _, op := range []func(context.Context, *gateway.Call) (any, error){s.opOpen, s.opSend} {
			for _, conn := range []string{"host", "other"} {
				_, err := op(ctx, &gateway.Call{Body: body, Authenticated: authed, ConnID: conn})
				var we *wire.Error
				if err != nil && !errors.As(err, &we) {
					t.Fatalf("refusal %v is not a *wire.Error", err)
				}
			}
		}
	})
}
