// Package streamset tracks the inbound libp2p streams a service is serving, so that its Close can cut them and
// wait for their handlers to return before it releases what they use.
package streamset

import (
	"sync"

	"github.com/libp2p/go-libp2p/core/network"
)

// Set is the inbound streams of one service and the handlers serving them. The zero value is ready; a Set
// must not be copied after first use.
type Set struct {
	mu      sync.Mutex
	wg      sync.WaitGroup
	closed  bool
	streams map[network.Stream]struct{}
}

// Add registers st for a handler that is about to serve it and reports whether it may: after Close it refuses,
// and the handler must reset st and return without calling Done.
func (s *Set) Add(st network.Stream) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.streams == nil {
		s.streams = make(map[network.Stream]struct{})
	}
	s.streams[st] = struct{}{}
	// Counted under mu, where Close sets closed, so Close waits for every handler it did not refuse.
	s.wg.Add(1)
	return true
}

// Done unregisters st once its handler has finished with it; it is called once per accepted Add.
func (s *Set) Done(st network.Stream) {
	s.mu.Lock()
	delete(s.streams, st)
	s.mu.Unlock()
	s.wg.Done()
}

// Handler wraps serve into a stream handler that serves each inbound stream while tracked, and resets a
// stream that arrives after Close.
func (s *Set) Handler(serve network.StreamHandler) network.StreamHandler {
	return func(st network.Stream) {
		if !s.Add(st) {
			_ = st.Reset()
			return
		}
		defer s.Done(st)
		serve(st)
	}
}

// Close refuses further streams, resets every tracked stream and waits until each of their handlers has
// called Done. It may be called more than once, and from several goroutines; each call waits.
func (s *Set) Close() {
	s.mu.Lock()
	s.closed = true
	for st := range s.streams {
		_ = st.Reset()
	}
	s.mu.Unlock()
	s.wg.Wait()
}
