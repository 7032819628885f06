package node

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/iagon/gridchat/keyregistry"
)

// GossipRepairSettings configures the gossip watchdog, which repairs
// connected grid peers that gossipsub has stopped exchanging messages with.
//
// go-libp2p-pubsub (v0.19) opens its outbound stream to a peer once, when
// identify reports that the peer speaks a gossipsub protocol. If that open
// fails it forgets the peer and does not try again while the connection
// lasts. When an open stream dies on a connection that stays up, it reopens
// the stream at most four times in ten minutes, and it forgets the topics
// that the peer had announced over the peer's own stream. The peer does not
// announce them again, so the node stops forwarding those topics to it. In
// both cases the two nodes share no gossip until their connection is torn
// down and made again.
//
// Every Interval the watchdog looks at each connected grid peer, which is a
// peer that speaks a gossipsub protocol and a protocol under the grid's
// prefix. A peer can be at fault in two ways. If gossipsub has had no
// outbound stream to the peer for Grace, the watchdog announces the peer's
// gossipsub protocols again on the host's event bus, and gossipsub then
// opens a new stream. If gossipsub has not counted the peer as a subscriber
// of the directory topic (which every grid node joins) for ReconnectGrace,
// the watchdog closes the connection and dials the peer again, so that both
// sides' gossipsub start over. ReconnectGrace is the longer wait because
// the peer may be the side whose stream failed, and its own watchdog
// repairs that without a reconnect. The repairs of one peer are spaced by a
// backoff that starts at Grace and doubles up to MaxBackoff. It resets once
// the peer is healthy. A tick repairs at most MaxPerTick peers.
type GossipRepairSettings struct {
	Interval time.Duration // how often peers are checked; default 5 s
	Grace    time.Duration // how long a peer has no stream before it is renotified; default 10 s
	// ReconnectGrace is how long a peer is missing from the directory
	// topic before it is reconnected. Default 30 s.
	ReconnectGrace time.Duration
	MaxBackoff     time.Duration // longest wait between repairs of one peer; default 5 minutes
	MaxPerTick     int           // peers repaired per check at most; default 4
	// DialTimeout bounds the dial that follows closing a connection.
	// Default 10 s.
	DialTimeout time.Duration
}

func (s GossipRepairSettings) withDefaults() GossipRepairSettings {
	if s.Interval == 0 {
		s.Interval = 5 * time.Second
	}
	if s.Grace == 0 {
		s.Grace = 10 * time.Second
	}
	if s.ReconnectGrace == 0 {
		s.ReconnectGrace = 30 * time.Second
	}
	if s.MaxBackoff == 0 {
		s.MaxBackoff = 5 * time.Minute
	}
	if s.MaxPerTick == 0 {
		s.MaxPerTick = 4
	}
	if s.DialTimeout == 0 {
		s.DialTimeout = 10 * time.Second
	}
	return s
}

func (s GossipRepairSettings) validate() error {
	if s.Interval < 0 || s.Grace < 0 || s.ReconnectGrace < 0 || s.MaxBackoff < 0 || s.MaxPerTick < 0 || s.DialTimeout < 0 {
		return fmt.Errorf("durations and max_per_tick must not be negative")
	}
	return nil
}

// Repair actions, the values of the repairs metric's action label.
const (
	repairRenotify  = "renotify"  // the peer's gossipsub protocols announced again
	repairReconnect = "reconnect" // the connection closed and dialled again
)

// gossipRepair is the gossip watchdog (see GossipRepairSettings). Its state
// is owned by the goroutine that runs it.
type gossipRepair struct {
	cfg    GossipRepairSettings
	host   host.Host
	ps     *pubsub.PubSub
	topic  string        // the directory topic
	prefix string        // the grid's protocol prefix followed by "/"
	protos []protocol.ID // the gossipsub protocols the node speaks
	emit   event.Emitter
	log    *slog.Logger

	repairs *prometheus.CounterVec
	peers   map[peer.ID]*repairState // peers at fault, forgotten once healthy
}

// repairState is what the watchdog remembers of a peer at fault.
type repairState struct {
	since   time.Time     // when it was first seen at fault
	next    time.Time     // the earliest time of its next repair
	backoff time.Duration // the wait after its next repair
}

// startGossipRepair starts the gossip watchdog under n.ctx; Close stops it.
func (n *Node) startGossipRepair() error {
	emit, err := n.host.EventBus().Emitter(new(event.EvtPeerProtocolsUpdated))
	if err != nil {
		return fmt.Errorf("node: gossip repair: %w", err)
	}
	repairs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gridchat_pubsub_repairs_total",
		Help: "Connected grid peers that gossipsub had stopped exchanging messages with, repaired by the gossip " +
			"watchdog, by action: renotify (no outbound stream; the peer's gossipsub protocols announced again) " +
			"or reconnect (the peer's topics lost; the connection closed and dialled again).",
	}, []string{"action"})
	if err := n.reg.Register(repairs); err != nil {
		_ = emit.Close()
		return fmt.Errorf("node: gossip repair metrics: %w", err)
	}
	r := &gossipRepair{
		cfg:     n.cfg.GossipRepair,
		host:    n.host,
		ps:      n.pubsub,
		topic:   keyregistry.TopicFor(n.protocolPrefix()),
		prefix:  string(n.protocolPrefix()) + "/",
		protos:  pubsub.GossipSubDefaultProtocols,
		emit:    emit,
		log:     n.log.With("part", "gossip-repair"),
		repairs: repairs,
		peers:   make(map[peer.ID]*repairState),
	}
	n.wg.Go(func() {
		defer emit.Close()
		r.run(n.ctx)
	})
	return nil
}

// run checks the peers every Interval until ctx ends.
func (r *gossipRepair) run(ctx context.Context) {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			r.tick(ctx, now)
		}
	}
}

// tick checks every connected grid peer once and repairs at most MaxPerTick
// of those at fault whose turn it is.
func (r *gossipRepair) tick(ctx context.Context, now time.Time) {
	streams := peerSet(r.ps.ListPeers(""))
	subscribers := peerSet(r.ps.ListPeers(r.topic))
	faulty := make(map[peer.ID]bool)
	repaired := 0
	for _, p := range r.host.Network().Peers() {
		if ctx.Err() != nil {
			return
		}
		if r.host.Network().Connectedness(p) != network.Connected {
			continue
		}
		var action string
		var grace time.Duration
		switch {
		case streams[p] && subscribers[p]:
			continue
		case !r.gridPeer(p):
			continue
		case !streams[p]:
			action, grace = repairRenotify, r.cfg.Grace
		default:
			action, grace = repairReconnect, r.cfg.ReconnectGrace
		}
		faulty[p] = true
		st := r.peers[p]
		if st == nil {
			// A peer just connected may not have been handled by gossipsub
			// yet, hence the grace before the first repair.
			st = &repairState{since: now, backoff: r.cfg.Grace}
			r.peers[p] = st
		}
		if now.Sub(st.since) < grace || now.Before(st.next) || repaired >= r.cfg.MaxPerTick {
			continue
		}
		repaired++
		r.repair(ctx, p, action)
		st.next = now.Add(st.backoff)
		st.backoff = min(2*st.backoff, r.cfg.MaxBackoff)
	}
	for p := range r.peers {
		if !faulty[p] {
			delete(r.peers, p)
		}
	}
}

// gridPeer reports whether p speaks a gossipsub protocol and a protocol of
// the grid, as identify recorded them in the peerstore.
func (r *gossipRepair) gridPeer(p peer.ID) bool {
	protos, err := r.host.Peerstore().GetProtocols(p)
	if err != nil {
		return false
	}
	var gossip, grid bool
	for _, proto := range protos {
		if strings.HasPrefix(string(proto), r.prefix) {
			grid = true
		}
		for _, g := range r.protos {
			if proto == g {
				gossip = true
			}
		}
	}
	return gossip && grid
}

// repair carries out action on p.
func (r *gossipRepair) repair(ctx context.Context, p peer.ID, action string) {
	switch action {
	case repairRenotify:
		protos, err := r.host.Peerstore().SupportsProtocols(p, r.protos...)
		if err != nil || len(protos) == 0 {
			return
		}
		r.repairs.WithLabelValues(action).Inc()
		r.log.Info("gossipsub has no stream to a connected peer; announcing its protocols again", "peer", p)
		// gossipsub reacts to this event as to identify's: it opens a
		// stream to a connected peer it has none to.
		if err := r.emit.Emit(event.EvtPeerProtocolsUpdated{Peer: p, Added: protos}); err != nil {
			r.log.Warn("gossip repair: announce protocols", "peer", p, "err", err)
		}
	case repairReconnect:
		ai := r.host.Peerstore().PeerInfo(p)
		if len(ai.Addrs) == 0 {
			// Closing a connection that cannot be dialled again would lose
			// the peer: leave it to the peer's own watchdog.
			return
		}
		r.repairs.WithLabelValues(action).Inc()
		r.log.Info("gossipsub lost a connected peer's topics; reconnecting", "peer", p)
		if err := r.host.Network().ClosePeer(p); err != nil {
			r.log.Warn("gossip repair: close connection", "peer", p, "err", err)
		}
		dctx, cancel := context.WithTimeout(ctx, r.cfg.DialTimeout)
		defer cancel()
		if err := r.host.Connect(dctx, ai); err != nil && ctx.Err() == nil {
			// The peer may dial back, or the DHT reconnects it later.
			r.log.Warn("gossip repair: dial again", "peer", p, "err", err)
		}
	}
}

func peerSet(ps []peer.ID) map[peer.ID]bool {
	set := make(map[peer.ID]bool, len(ps))
	for _, p := range ps {
		set[p] = true
	}
	return set
}
