package gateway

import (
	"context"
	"testing"

	"github.com/iagon/gridchat/gateway/gatewaytest"
	"github.com/iagon/gridchat/wire"
)

// TestAsyncAnswersFromAnotherGoroutineWithinTheInFlightLimit registers an operation whose result arrives by
// callback: it is answered when respond is called from another goroutine, later requests run meanwhile, at most
// MaxInFlight such operations wait at once (the read loop stops reading beyond that), and a panicking Async
// answers internal without hurting the connection.
func TestAsyncAnswersFromAnotherGoroutineWithinTheInFlightLimit(t *testing.T) {
	th := newTestHub(t, WSLimits{MaxInFlight: 2})
	release := make(chan func(any, error), 8)
	if err := th.Handle("later", func(context.Context, *Call) (any, error) {
		return Async(func(respond func(any, error)) { release <- respond }), nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := th.Handle("boom", func(context.Context, *Call) (any, error) {
		return Async(func(func(any, error)) { panic("bug") }), nil
	}); err != nil {
		t.Fatal(err)
	}
	c := th.login(t, th.dir.add(t))
	if _, err := c.Call(ctxT(t), "boom", nil); err == nil {
		t.Fatal("panicking Async answered without error")
	} else {
		wantCode(t, err, wire.CodeInternal)
	}
	var chans []<-chan wire.Response
	for range 3 {
		ch, err := c.Start(ctxT(t), "later", nil)
		if err != nil {
			t.Fatal(err)
		}
		chans = append(chans, ch)
	}
	r1, r2 := <-release, <-release
	// The third waits for an in-flight slot: the connection is not read, so even ping is not answered yet.
	pong, err := c.Start(ctxT(t), wire.OpPing, nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-release:
		t.Fatal("a third Async ran beyond MaxInFlight 2")
	case <-pong:
		t.Fatal("the read loop went on beyond MaxInFlight")
	default:
	}
	go r2(map[string]int{"n": 2}, nil)
	r3 := <-release
	if _, err := gatewaytest.Wait(ctxT(t), pong); err != nil {
		t.Fatal(err)
	}
	r1(map[string]int{"n": 1}, nil)
	r1(map[string]int{"n": 99}, nil) // a second call is ignored
	r3(nil, wire.Errorf(wire.CodeBusy, "no"))
	for i, want := range []string{`{"n":1}`, `{"n":2}`} {
		body, err := gatewaytest.Wait(ctxT(t), chans[i])
		if err != nil || string(body) != want {
			t.Fatalf("later %d: %s %v", i, body, err)
		}
	}
	if _, err := gatewaytest.Wait(ctxT(t), chans[2]); err == nil {
		t.Fatal("error response lost")
	} else {
		wantCode(t, err, wire.CodeBusy)
	}
}
