package relay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/iagon/gridchat/wire"
)

// DeliverProtocol is the libp2p stream protocol that carries envelopes to the gateway a device is connected to,
// in a grid with the default protocol prefix "/gridchat" (DeliverProtocolFor).
const DeliverProtocol = protocol.ID("/gridchat/deliver/1.0.0")

// DeliverProtocolFor returns the deliver stream protocol of the grid whose protocol prefix is prefix:
// prefix + "/deliver/1.0.0". The empty prefix is the default one and gives DeliverProtocol.
func DeliverProtocolFor(prefix protocol.ID) protocol.ID {
	if prefix == "" {
		return DeliverProtocol
	}
	return prefix + "/deliver/1.0.0"
}

// Outcome is the result of delivering one envelope to one device.
type Outcome = wire.Outcome

func failed(code wire.Code, reason string) Outcome { return wire.Failed(code, reason) }

// Local is what relay needs from the gateway's connection manager: the devices connected to this node.
type Local interface {
	// Connected reports whether the device has an authenticated connection to this node.
	Connected(device wire.DeviceID) bool
	// Push queues env for every connection of env.Recipient without blocking and returns a channel that
	// receives exactly one Outcome: delivered when a connection of the device acknowledges it, offline when the
	// device has no connection here, failed otherwise (acknowledgement timeout, disconnect, overload). A
	// duplicate of an envelope still in the device's dedupe window is not pushed again; it gets the outcome of
	// the first.
	Push(env wire.Envelope) <-chan Outcome
}

// errLinkClosed is the cause when a link to a peer fails or is closed.
var errLinkClosed = errors.New("relay: deliver link closed")

// link is one long-lived outbound deliver stream to a peer. Requests are pipelined: Enqueue writes them in call
// order, a bounded window limits how many await their result, and a reader goroutine matches results by id.
type link struct {
	peer   peer.ID
	s      network.Stream
	lim    Limits
	window chan struct{} // one token per request in flight
	out    chan deliverReq
	done   chan struct{} // closed when the link is dead
	wg     sync.WaitGroup

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]func(Outcome)
	err     error
	last    time.Time // last activity, for idle close
	log     *slog.Logger
	// unprotect releases the connection manager's protection of the peer connection the link uses.
	unprotect func()
}

func newLink(p peer.ID, s network.Stream, lim Limits, log *slog.Logger, unprotect func()) *link {
	l := &link{
		peer: p, s: s, lim: lim,
		window:  make(chan struct{}, lim.Window),
		out:     make(chan deliverReq, lim.Window),
		done:    make(chan struct{}),
		pending: make(map[uint64]func(Outcome)),
		last:    time.Now(),
		log:     log,

		unprotect: unprotect,
	}
	l.wg.Add(2)
	go l.writeLoop()
	go l.readLoop()
	return l
}

// Enqueue queues env on the link, waiting for a window slot while ctx allows; done is called once with its
// outcome (from the link's reader, so it must not block) unless Enqueue returns an error. Envelopes enqueued
// by one goroutine are written in order.
func (l *link) Enqueue(ctx context.Context, env wire.Envelope, done func(Outcome)) error {
	select {
	case l.window <- struct{}{}:
	case <-l.done:
		return l.cause()
	case <-ctx.Done():
		return ctx.Err()
	}
	l.mu.Lock()
	if l.err != nil {
		l.mu.Unlock()
		<-l.window
		return l.err
	}
	l.nextID++
	id := l.nextID
	l.pending[id] = done
	l.last = time.Now()
	// The window bounds pending requests and out has the window's capacity, so this send never blocks while
	// the link's mutex is held; holding it keeps ids in write order.
	l.out <- deliverReq{id: id, env: env}
	l.mu.Unlock()
	return nil
}

func (l *link) cause() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// fail marks the link dead with err, resets its stream and fails every pending request.
func (l *link) fail(err error) {
	l.mu.Lock()
	if l.err != nil {
		l.mu.Unlock()
		return
	}
	l.err = fmt.Errorf("%w: %v", errLinkClosed, err)
	pending := l.pending
	l.pending = nil
	close(l.done)
	l.mu.Unlock()
	_ = l.s.Reset()
	if l.unprotect != nil {
		l.unprotect()
	}
	l.log.Debug("relay: deliver link closed", "peer", l.peer, "pending", len(pending), "err", err)
	for _, done := range pending {
		done(failed(wire.CodeUnavailable, wire.FailUnreachable))
	}
}

func (l *link) writeLoop() {
	defer l.wg.Done()
	w := bufio.NewWriterSize(l.s, 64<<10)
	idle := time.NewTicker(l.lim.LinkIdle / 4)
	defer idle.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-idle.C:
			l.mu.Lock()
			quiet := len(l.pending) == 0 && time.Since(l.last) > l.lim.LinkIdle
			l.mu.Unlock()
			if quiet {
				l.fail(errors.New("idle"))
				return
			}
		case r := <-l.out:
			_ = l.s.SetWriteDeadline(time.Now().Add(l.lim.WriteTimeout))
			err := writeDeliver(w, r)
			// Batch whatever else is queued into the same flush.
			for err == nil && len(l.out) > 0 {
				err = writeDeliver(w, <-l.out)
			}
			if err == nil {
				err = w.Flush()
			}
			if err != nil {
				l.fail(err)
				return
			}
		}
	}
}

func (l *link) readLoop() {
	defer l.wg.Done()
	r := bufio.NewReaderSize(l.s, 16<<10)
	var buf []byte
	for {
		// Results come back at most AckTimeout after the request plus transit; a peer silent for longer while we
		// wait is dead. With nothing pending the deadline only bounds the idle link.
		_ = l.s.SetReadDeadline(time.Now().Add(l.lim.AckTimeout + l.lim.LinkIdle))
		f, err := readFrame(r, buf, resultFixed+maxReasonLen)
		if err != nil {
			l.fail(err)
			return
		}
		buf = f
		res, err := parseResult(f)
		if err != nil {
			l.fail(err)
			return
		}
		l.mu.Lock()
		done, ok := l.pending[res.id]
		delete(l.pending, res.id)
		l.last = time.Now()
		l.mu.Unlock()
		if !ok {
			l.fail(fmt.Errorf("result for unknown request %d", res.id))
			return
		}
		<-l.window
		done(res.out)
	}
}

// close stops the link and waits for its goroutines.
func (l *link) close() {
	l.fail(errors.New("closed"))
	l.wg.Wait()
}

// notifyingLocal is a Local that reports outcomes by callback (the gateway's Hub does): an inbound deliver
// stream then needs no goroutine per envelope, and an acknowledgement goes from the device's connection to the
// stream's writer in one hand-off.
type notifyingLocal interface {
	// PushNotify is Push with a callback: done is called exactly once and must not block.
	PushNotify(env wire.Envelope, done func(Outcome))
}

// serveDeliver handles one inbound deliver stream: it reads requests, hands each to local in order, and writes
// every outcome back as it arrives, coalescing what is ready into one flush. A peer that exceeds the window,
// sends a malformed frame or stays silent past the idle timeout loses the stream.
//
// A window slot (a token in sem) is taken when a request is read and given back when its result is written, so
// at most Window results are ever queued: the outcome callbacks never block.
func (s *Service) serveDeliver(st network.Stream) {
	lim := s.lim
	remote := st.Conn().RemotePeer()
	results := make(chan deliverRes, lim.Window)
	sem := make(chan struct{}, lim.Window)
	done := make(chan struct{})
	writerDone := make(chan struct{})

	go func() { // the writer: owned here, stopped by closing done once every slot is back (or on close)
		defer close(writerDone)
		w := bufio.NewWriterSize(st, 16<<10)
		broken := false
		for {
			select {
			case <-done:
				return
			case r := <-results:
				if broken {
					<-sem
					continue
				}
				_ = st.SetWriteDeadline(time.Now().Add(lim.WriteTimeout))
				err := writeResult(w, r)
				<-sem
				for err == nil && len(results) > 0 {
					err = writeResult(w, <-results)
					<-sem
				}
				if err == nil {
					err = w.Flush()
				}
				if err != nil {
					broken = true
					_ = st.Reset()
				}
			}
		}
	}()

	notify, hasNotify := s.local.(notifyingLocal)
	var waiters sync.WaitGroup // goroutines waiting on a plain Local's outcome channels
	r := bufio.NewReaderSize(st, 64<<10)
	var buf []byte
	var readErr error
	for {
		_ = st.SetReadDeadline(time.Now().Add(lim.AckTimeout + lim.LinkIdle))
		f, err := readFrame(r, buf, deliverFixed+lim.MaxCiphertext)
		if err != nil {
			readErr = err
			break
		}
		buf = f
		req, err := parseDeliver(f, lim.MaxCiphertext)
		if err != nil {
			readErr = err
			break
		}
		select {
		case sem <- struct{}{}:
		default:
			readErr = fmt.Errorf("%w: window of %d exceeded", errFrame, lim.Window)
		}
		if readErr != nil {
			break
		}
		s.metrics.inbound.Inc()
		id := req.id
		if hasNotify {
			notify.PushNotify(req.env, func(out Outcome) { results <- deliverRes{id: id, out: out} })
			continue
		}
		ch := s.local.Push(req.env)
		waiters.Add(1)
		go func() {
			defer waiters.Done()
			var out Outcome
			select {
			case out = <-ch:
			case <-s.closing:
				out = failed(wire.CodeUnavailable, wire.FailUnreachable)
			}
			results <- deliverRes{id: id, out: out}
		}()
	}
	if readErr != nil && !errors.Is(readErr, io.EOF) {
		if errors.Is(readErr, errFrame) {
			s.metrics.dropped.WithLabelValues("peer_protocol").Inc()
			s.log.Debug("relay: deliver stream refused", "peer", remote, "err", readErr)
			_ = st.Reset()
		}
	}
	// Wait until every result is written (all slots back), unless the service closes first; callbacks that
	// come later still find room in results, which nobody reads any more.
fill:
	for range lim.Window {
		select {
		case sem <- struct{}{}:
		case <-s.closing:
			break fill
		}
	}
	waiters.Wait()
	close(done)
	<-writerDone
	_ = st.Close()
}
