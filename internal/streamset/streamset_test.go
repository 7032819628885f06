package streamset

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testProto = protocol.ID("/streamset-test/1.0.0")

func newHost(t *testing.T) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// pair returns a server host serving testProto with handler, and a function that opens a stream to it.
func pair(t *testing.T, handler network.StreamHandler) func() network.Stream {
	t.Helper()
	srv, cli := newHost(t), newHost(t)
	srv.SetStreamHandler(testProto, handler)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	if err := cli.Connect(ctx, peer.AddrInfo{ID: srv.ID(), Addrs: srv.Addrs()}); err != nil {
		t.Fatal(err)
	}
	return func() network.Stream {
		st, err := cli.NewStream(ctx, srv.ID(), testProto)
		if err != nil {
			t.Fatal(err)
		}
		// The handler runs once the server reads the protocol header, which a first write sends.
		if _, err := st.Write([]byte{1}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Reset() })
		return st
	}
}

func TestCloseResetsStreamsAndWaitsForRunningHandlers(t *testing.T) {
	var set Set
	const n = 3
	started := make(chan struct{}, n)
	cut := make(chan error, n)
	release := make(chan struct{})
	open := pair(t, set.Handler(func(st network.Stream) {
		started <- struct{}{}
		// Block until Close resets the stream, then keep working until the test releases the handler.
		_, err := io.Copy(io.Discard, st)
		if err == nil {
			err = errors.New("stream ended cleanly")
		}
		cut <- err
		<-release
	}))
	for range n {
		open()
	}
	for range n {
		<-started
	}

	closed := make(chan struct{})
	go func() {
		set.Close()
		close(closed)
	}()
	for range n {
		select {
		case err := <-cut:
			if !errors.Is(err, network.ErrReset) {
				t.Fatalf("handler's read ended with %v, want a reset", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Close did not reset the tracked streams")
		}
	}
	select {
	case <-closed:
		t.Fatal("Close returned while handlers were still running")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return after the handlers did")
	}
	set.Close() // idempotent: nothing left to wait for
}

func TestAddAfterCloseRefusesAndTheHandlerResetsTheStream(t *testing.T) {
	var set Set
	served := make(chan struct{}, 1)
	open := pair(t, set.Handler(func(network.Stream) { served <- struct{}{} }))
	set.Close()

	st := open()
	_ = st.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := st.Read(make([]byte, 1)); !errors.Is(err, network.ErrReset) {
		t.Fatalf("read from a stream opened after Close: %v, want a reset", err)
	}
	select {
	case <-served:
		t.Fatal("a stream opened after Close was served")
	default:
	}
	if set.Add(st) {
		t.Fatal("Add after Close accepted a stream")
	}
}

func TestDoneUntracksSoCloseNeitherWaitsForNorResetsIt(t *testing.T) {
	open := pair(t, func(st network.Stream) { _, _ = io.Copy(io.Discard, st) })
	var set Set
	st := open()
	if !set.Add(st) {
		t.Fatal("Add refused before Close")
	}
	set.Done(st)
	closed := make(chan struct{})
	go func() {
		set.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for a stream that was done")
	}
	if _, err := st.Write([]byte{2}); err != nil {
		t.Fatalf("write after Close: %v: Close cut a stream that was done", err)
	}
}
