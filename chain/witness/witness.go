// Package witness lets the nodes of the grid watch each other's key
// publication logs: every node cosigns other logs' checkpoints over the
// libp2p protocol <prefix>/witness/1.0.0 (/gridchat/witness/1.0.0 by default;
// C2SP tlog-witness semantics, C2SP tlog-cosignature signatures) after
// checking that each is consistent with the last one it cosigned, gossips
// checkpoints on the pubsub topic <prefix>/checkpoints/1, and keeps the
// evidence of any split view: two checkpoints of one log that cannot both be
// true. A log caught so is no longer trusted.
package witness

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"filippo.io/torchwood"
	"github.com/iagon/gridchat/chain"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/note"

	"github.com/iagon/gridchat/internal/streamset"
)

// Limits bounds what a witness accepts and keeps.
type Limits struct {
	// MaxMessage bounds a request, response or gossip message.
	MaxMessage int
	// StreamTimeout is the deadline of a whole witness stream.
	StreamTimeout time.Duration
	// SeenPerOrigin is how many recent checkpoints of each log are kept to
	// compare gossip against.
	SeenPerOrigin int
	// MaxOrigins bounds the logs whose gossip is tracked in memory.
	MaxOrigins int
	// MaxLogs bounds the logs this witness cosigns (and keeps state for).
	MaxLogs int
}

// DefaultLimits returns the limits of a node.
func DefaultLimits() Limits {
	return Limits{
		MaxMessage:    chain.MaxCheckpointSize + chain.MaxProofHashes*46 + 64,
		StreamTimeout: 10 * time.Second,
		SeenPerOrigin: 256,
		MaxOrigins:    4096,
		MaxLogs:       4096,
	}
}

// Config configures a Witness. Host, PubSub, Datastore and Key are required.
type Config struct {
	Host      host.Host
	PubSub    *pubsub.PubSub
	Datastore ds.Datastore
	// ProtocolPrefix is the grid's protocol prefix (the node's
	// protocol_prefix): the witness serves ProtocolIDFor(ProtocolPrefix) and
	// follows TopicFor(ProtocolPrefix). Empty means the default prefix
	// (ProtocolID, Topic).
	ProtocolPrefix protocol.ID
	// Key signs cosignatures. With the default naming, it must be the host's
	// identity key, so peers find it from the peer ID.
	Key ed25519.PrivateKey
	// Name is the witness's cosignature key name; it defaults to
	// WitnessName(Host.ID()).
	Name string
	// LogKey resolves a log origin to its checkpoint verifier; it defaults to
	// PeerLogKey.
	LogKey func(origin string) (note.Verifier, error)
	// AcceptLog, if set, says which logs this witness cosigns (e.g. only
	// peers of the grid); others get StatusBadSignature.
	AcceptLog func(origin string) bool
	// Logger defaults to discarding; Registerer to none.
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Clock defaults to time.Now.
	Clock  func() time.Time
	Limits Limits
}

// Errors callers act on.
var (
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("witness: closed")
)

// Evidence is the proof of a split view: two checkpoints of one log, each
// signed by the log, that cannot both be views of one append-only log.
type Evidence struct {
	Origin string `json:"origin"`
	// Reason is "same-size" (equal sizes, different roots) or
	// "inconsistent" (the log's own consistency proof between them fails).
	Reason     string    `json:"reason"`
	DetectedAt time.Time `json:"detected_at"`
	// CheckpointA and CheckpointB are the two signed notes.
	CheckpointA string `json:"checkpoint_a"`
	CheckpointB string `json:"checkpoint_b"`
}

// Witness cosigns and watches the grid's logs.
type Witness struct {
	cfg       Config
	log       *slog.Logger
	signer    *torchwood.CosignatureSigner
	proto     protocol.ID // the witness stream protocol
	topicName string      // the checkpoint topic
	topic     *pubsub.Topic
	sub       *pubsub.Subscription

	mu         sync.Mutex
	seen       map[string]*seenLog // by origin: recent checkpoints from any source
	distrusted map[string]bool
	logs       int // logs with stored state

	splitViews prometheus.Counter
	requests   *prometheus.CounterVec
	gossip     *prometheus.CounterVec

	// evidenceQ carries split-view notes to gossip, so every node sees
	// both sides; announceLoop drains it.
	evidenceQ chan []byte

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once

	// inbound is the add-checkpoint streams being served, which Close cuts
	// and waits for (they write to the datastore).
	inbound streamset.Set
}

type seenLog struct {
	bySize map[uint64][]byte // size → signed note (log signature only)
	order  []uint64
}

// Datastore keys.
const (
	dsLatest   = "/chain/witness/latest/"
	dsEvidence = "/chain/witness/splitview/"
)

func originKey(prefix, origin string) ds.Key {
	h := sha256.Sum256([]byte(origin))
	return ds.NewKey(prefix + hex.EncodeToString(h[:]))
}

// New starts a witness: it serves its stream protocol on the host and
// follows its checkpoint topic (ProtocolIDFor, TopicFor).
func New(ctx context.Context, cfg Config) (*Witness, error) {
	if cfg.Host == nil || cfg.PubSub == nil || cfg.Datastore == nil || len(cfg.Key) != ed25519.PrivateKeySize {
		return nil, errors.New("witness: new: host, pubsub, datastore and key are required")
	}
	if cfg.Name == "" {
		cfg.Name = WitnessName(cfg.Host.ID())
	}
	if cfg.LogKey == nil {
		cfg.LogKey = PeerLogKey
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	def := DefaultLimits()
	if cfg.Limits.MaxMessage <= 0 {
		cfg.Limits.MaxMessage = def.MaxMessage
	}
	if cfg.Limits.StreamTimeout <= 0 {
		cfg.Limits.StreamTimeout = def.StreamTimeout
	}
	if cfg.Limits.SeenPerOrigin <= 0 {
		cfg.Limits.SeenPerOrigin = def.SeenPerOrigin
	}
	if cfg.Limits.MaxOrigins <= 0 {
		cfg.Limits.MaxOrigins = def.MaxOrigins
	}
	if cfg.Limits.MaxLogs <= 0 {
		cfg.Limits.MaxLogs = def.MaxLogs
	}
	signer, err := torchwood.NewCosignatureSigner(cfg.Name, cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("witness: new: %w", err)
	}
	w := &Witness{
		cfg: cfg, log: cfg.Logger, signer: signer,
		proto: ProtocolIDFor(cfg.ProtocolPrefix), topicName: TopicFor(cfg.ProtocolPrefix),
		seen: map[string]*seenLog{}, distrusted: map[string]bool{},
		evidenceQ: make(chan []byte, 16),
		splitViews: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gridchat_witness_split_views_total",
			Help: "Split views detected: two checkpoints of one log that are not consistent.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gridchat_witness_requests_total",
			Help: "Add-checkpoint requests served, by status.",
		}, []string{"status"}),
		gossip: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gridchat_witness_gossip_total",
			Help: "Gossiped checkpoints received, by result.",
		}, []string{"result"}),
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{w.splitViews, w.requests, w.gossip} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("witness: new: register metrics: %w", err)
			}
		}
	}
	if err := w.loadDistrusted(ctx); err != nil {
		return nil, err
	}
	if err := w.countLogs(ctx); err != nil {
		return nil, err
	}
	w.topic, err = cfg.PubSub.Join(w.topicName)
	if err != nil {
		return nil, fmt.Errorf("witness: join %s: %w", w.topicName, err)
	}
	w.sub, err = w.topic.Subscribe()
	if err != nil {
		w.topic.Close()
		return nil, fmt.Errorf("witness: subscribe %s: %w", w.topicName, err)
	}
	w.ctx, w.cancel = context.WithCancel(context.WithoutCancel(ctx))
	cfg.Host.SetStreamHandler(w.proto, w.inbound.Handler(w.handleStream))
	w.wg.Go(w.gossipLoop)
	w.wg.Go(w.announceLoop)
	return w, nil
}

// Close stops serving and following gossip, cuts the streams being served,
// and waits for its goroutines and handlers. It is idempotent.
func (w *Witness) Close() error {
	var err error
	w.closeOnce.Do(func() {
		w.cfg.Host.RemoveStreamHandler(w.proto)
		w.cancel()
		w.sub.Cancel()
		w.inbound.Close()
		w.wg.Wait()
		err = w.topic.Close()
	})
	if err != nil {
		return fmt.Errorf("witness: close: %w", err)
	}
	return nil
}

// Protocol returns the witness stream protocol this witness serves and its
// cosigners speak.
func (w *Witness) Protocol() protocol.ID { return w.proto }

// Name returns the witness's cosignature key name.
func (w *Witness) Name() string { return w.signer.Name() }

// Verifier returns the verifier of this witness's cosignatures.
func (w *Witness) Verifier() note.Verifier { return w.signer.Verifier() }

// Distrusted reports whether the log origin was caught showing a split view.
// It fits chain.Policy.Distrusted.
func (w *Witness) Distrusted(origin string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.distrusted[origin]
}

// SplitViews returns the evidence of every split view this witness saw.
func (w *Witness) SplitViews(ctx context.Context) ([]Evidence, error) {
	res, err := w.cfg.Datastore.Query(ctx, query.Query{Prefix: dsEvidence})
	if err != nil {
		return nil, fmt.Errorf("witness: split views: %w", err)
	}
	defer res.Close()
	var out []Evidence
	for r := range res.Next() {
		if r.Error != nil {
			return nil, fmt.Errorf("witness: split views: %w", r.Error)
		}
		var e Evidence
		if err := json.Unmarshal(r.Value, &e); err != nil {
			return nil, fmt.Errorf("witness: split views: %s: %w", r.Key, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// EvidenceHandler serves the split-view evidence as a JSON array of Evidence
// (GET only). The gateway mounts it on its HTTP API.
func (w *Witness) EvidenceHandler() http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(rw, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		ev, err := w.SplitViews(r.Context())
		if err != nil {
			w.log.Error("serve split-view evidence", "err", err)
			http.Error(rw, "internal error", http.StatusInternalServerError)
			return
		}
		if ev == nil {
			ev = []Evidence{}
		}
		rw.Header().Set("Content-Type", "application/json")
		json.NewEncoder(rw).Encode(ev)
	})
}

// Announce gossips a checkpoint of a log on the checkpoint topic, with the
// consistency proof from the tree of size old.
func (w *Witness) Announce(ctx context.Context, old uint64, proof [][]byte, signedCheckpoint []byte) error {
	b := (&request{Old: old, Proof: proof, Checkpoint: signedCheckpoint}).marshal()
	if len(b) > w.cfg.Limits.MaxMessage {
		return fmt.Errorf("witness: announce: %d bytes: %w", len(b), errMalformed)
	}
	if err := w.topic.Publish(ctx, b); err != nil {
		return fmt.Errorf("witness: announce: %w", err)
	}
	return nil
}

// TopicPeers returns the peers known to follow the checkpoint topic.
func (w *Witness) TopicPeers() []peer.ID { return w.topic.ListPeers() }

func (w *Witness) loadDistrusted(ctx context.Context) error {
	ev, err := w.SplitViews(ctx)
	if err != nil {
		return err
	}
	for _, e := range ev {
		w.distrusted[e.Origin] = true
	}
	return nil
}

func (w *Witness) countLogs(ctx context.Context) error {
	res, err := w.cfg.Datastore.Query(ctx, query.Query{Prefix: dsLatest, KeysOnly: true})
	if err != nil {
		return fmt.Errorf("witness: count logs: %w", err)
	}
	defer res.Close()
	for r := range res.Next() {
		if r.Error != nil {
			return fmt.Errorf("witness: count logs: %w", r.Error)
		}
		w.logs++
	}
	return nil
}

// opened is a checkpoint whose log signature verified.
type opened struct {
	cp      chain.Checkpoint
	logNote []byte // the note with the log's signature only
}

// openLogCheckpoint verifies the log's signature and strips any other.
func (w *Witness) openLogCheckpoint(signed []byte) (*opened, error) {
	origin, _, _ := strings.Cut(string(signed), "\n")
	v, err := w.cfg.LogKey(origin)
	if err != nil {
		return nil, fmt.Errorf("unknown log %q: %w", origin, err)
	}
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		return nil, fmt.Errorf("checkpoint of %q: %w", origin, err)
	}
	cp, err := chain.ParseCheckpointText([]byte(n.Text))
	if err != nil {
		return nil, err
	}
	if cp.Origin != v.Name() {
		return nil, fmt.Errorf("checkpoint origin %q signed by %q", cp.Origin, v.Name())
	}
	n.UnverifiedSigs = nil
	logNote, err := note.Sign(n)
	if err != nil {
		return nil, err
	}
	return &opened{cp: cp, logNote: logNote}, nil
}

// latest returns the checkpoint this witness last cosigned for origin.
func (w *Witness) latest(ctx context.Context, origin string) (*opened, error) {
	b, err := w.cfg.Datastore.Get(ctx, originKey(dsLatest, origin))
	if errors.Is(err, ds.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return w.openLogCheckpoint(b)
}

// handleStream serves one add-checkpoint request; w.inbound tracks it for
// Close.
func (w *Witness) handleStream(s network.Stream) {
	defer s.Close()
	if err := s.SetDeadline(w.cfg.Clock().Add(w.cfg.Limits.StreamTimeout)); err != nil {
		s.Reset()
		return
	}
	b, err := readFrame(s, w.cfg.Limits.MaxMessage)
	var resp *response
	if err != nil {
		resp = &response{Status: StatusMalformed}
	} else {
		resp = w.addCheckpoint(w.ctx, s.Conn().RemotePeer(), b)
	}
	w.requests.WithLabelValues(strconv.Itoa(resp.Status)).Inc()
	if err := writeFrame(s, resp.marshal()); err != nil {
		s.Reset()
		return
	}
	if resp.Status == StatusOK {
		// Gossip what this witness cosigned, so that witnesses shown
		// different checkpoints of one size by a log compare notes.
		if req, err := parseRequest(b); err == nil {
			if nc, err := w.openLogCheckpoint(req.Checkpoint); err == nil {
				if err := w.Announce(w.ctx, 0, nil, nc.logNote); err != nil && w.ctx.Err() == nil {
					w.log.Debug("witness: gossip cosigned checkpoint", "err", err)
				}
			}
		}
	}
}

// addCheckpoint is the tlog-witness add-checkpoint operation.
func (w *Witness) addCheckpoint(ctx context.Context, from peer.ID, body []byte) *response {
	req, err := parseRequest(body)
	if err != nil {
		return &response{Status: StatusMalformed}
	}
	nc, err := w.openLogCheckpoint(req.Checkpoint)
	if err != nil {
		return &response{Status: StatusBadSignature}
	}
	origin := nc.cp.Origin
	if w.cfg.AcceptLog != nil && !w.cfg.AcceptLog(origin) {
		return &response{Status: StatusBadSignature}
	}
	// One request at a time: the check, the store and the cosignature must
	// not interleave with another request for the log.
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.distrusted[origin] {
		return &response{Status: StatusDistrusted}
	}
	w.noteSeenLocked(origin, nc)
	if ev := w.sameSizeLocked(origin, nc); ev != nil {
		w.recordLocked(ctx, ev)
		return &response{Status: StatusDistrusted}
	}
	last, err := w.latest(ctx, origin)
	if err != nil {
		w.log.Error("witness: read state", "origin", origin, "err", err)
		return &response{Status: StatusInternalError}
	}
	var lastSize uint64
	if last != nil {
		lastSize = last.cp.Size
	}
	if req.Old != lastSize {
		return &response{Status: StatusConflict, Payload: []byte(strconv.FormatUint(lastSize, 10) + "\n")}
	}
	if nc.cp.Size < req.Old {
		return &response{Status: StatusMalformed}
	}
	if last == nil && w.logs >= w.cfg.Limits.MaxLogs {
		return &response{Status: StatusFull}
	}
	if last != nil {
		if err := chain.VerifyConsistency(last.cp, nc.cp, req.Proof); err != nil {
			if from == logPeer(origin) {
				// The log itself signed a checkpoint it cannot prove
				// consistent with one it signed before.
				w.recordLocked(ctx, &Evidence{Origin: origin, Reason: "inconsistent",
					CheckpointA: string(last.logNote), CheckpointB: string(nc.logNote)})
			}
			return &response{Status: StatusInconsistent}
		}
	} else if len(req.Proof) != 0 {
		return &response{Status: StatusInconsistent}
	}
	if err := w.cfg.Datastore.Put(ctx, originKey(dsLatest, origin), nc.logNote); err != nil {
		w.log.Error("witness: store checkpoint", "origin", origin, "err", err)
		return &response{Status: StatusInternalError}
	}
	if err := w.cfg.Datastore.Sync(ctx, ds.NewKey(dsLatest)); err != nil {
		w.log.Error("witness: sync checkpoint", "origin", origin, "err", err)
		return &response{Status: StatusInternalError}
	}
	if last == nil {
		w.logs++
	}
	cosigned, err := note.Sign(&note.Note{Text: nc.cp.Text()}, w.signer)
	if err != nil {
		w.log.Error("witness: cosign", "origin", origin, "err", err)
		return &response{Status: StatusInternalError}
	}
	// The response carries only the cosignature line.
	_, sigs, _ := bytes.Cut(cosigned, []byte("\n\n"))
	return &response{Status: StatusOK, Payload: sigs}
}

// noteSeenLocked remembers a checkpoint of origin, bounded per origin and in
// the number of origins.
func (w *Witness) noteSeenLocked(origin string, c *opened) {
	sl := w.seen[origin]
	if sl == nil {
		if len(w.seen) >= w.cfg.Limits.MaxOrigins {
			return
		}
		sl = &seenLog{bySize: map[uint64][]byte{}}
		w.seen[origin] = sl
	}
	if _, ok := sl.bySize[c.cp.Size]; ok {
		return
	}
	sl.bySize[c.cp.Size] = c.logNote
	sl.order = append(sl.order, c.cp.Size)
	if len(sl.order) > w.cfg.Limits.SeenPerOrigin {
		delete(sl.bySize, sl.order[0])
		sl.order = sl.order[1:]
	}
}

// sameSizeLocked returns evidence if a checkpoint of the same size and
// another root was seen.
func (w *Witness) sameSizeLocked(origin string, c *opened) *Evidence {
	sl := w.seen[origin]
	if sl == nil {
		return nil
	}
	prev, ok := sl.bySize[c.cp.Size]
	if !ok {
		return nil
	}
	pc, err := w.openLogCheckpoint(prev)
	if err != nil || pc.cp.Root == c.cp.Root {
		return nil
	}
	return &Evidence{Origin: origin, Reason: "same-size", CheckpointA: string(prev), CheckpointB: string(c.logNote)}
}

// recordLocked stores split-view evidence and stops trusting the log.
func (w *Witness) recordLocked(ctx context.Context, ev *Evidence) {
	if w.distrusted[ev.Origin] {
		return
	}
	w.distrusted[ev.Origin] = true
	ev.DetectedAt = w.cfg.Clock().UTC()
	w.splitViews.Inc()
	w.log.Warn("split view: log is no longer trusted", "origin", ev.Origin, "reason", ev.Reason)
	b, err := json.Marshal(ev)
	if err == nil {
		err = w.cfg.Datastore.Put(ctx, originKey(dsEvidence, ev.Origin), b)
	}
	if err == nil {
		err = w.cfg.Datastore.Sync(ctx, ds.NewKey(dsEvidence))
	}
	if err != nil {
		w.log.Error("witness: store split-view evidence", "origin", ev.Origin, "err", err)
	}
	for _, n := range []string{ev.CheckpointA, ev.CheckpointB} {
		select {
		case w.evidenceQ <- []byte(n):
		default:
			w.gossip.WithLabelValues("evidence_dropped").Inc()
		}
	}
}

// announceLoop gossips the checkpoints of split views found here, so nodes
// that saw only one side learn of the other.
func (w *Witness) announceLoop() {
	for {
		select {
		case <-w.ctx.Done():
			return
		case n := <-w.evidenceQ:
			if err := w.Announce(w.ctx, 0, nil, n); err != nil && w.ctx.Err() == nil {
				w.log.Debug("witness: gossip split-view evidence", "err", err)
			}
		}
	}
}

func (w *Witness) gossipLoop() {
	for {
		msg, err := w.sub.Next(w.ctx)
		if err != nil {
			return
		}
		w.gossip.WithLabelValues(w.handleGossip(w.ctx, msg.GetFrom(), msg.Data)).Inc()
	}
}

// handleGossip checks a gossiped checkpoint against what this node saw of
// the log, and returns the result label.
func (w *Witness) handleGossip(ctx context.Context, from peer.ID, data []byte) string {
	if len(data) > w.cfg.Limits.MaxMessage {
		return "too_large"
	}
	req, err := parseRequest(data)
	if err != nil {
		return "malformed"
	}
	nc, err := w.openLogCheckpoint(req.Checkpoint)
	if err != nil {
		return "bad_signature"
	}
	origin := nc.cp.Origin
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.distrusted[origin] {
		return "distrusted"
	}
	if ev := w.sameSizeLocked(origin, nc); ev != nil {
		w.recordLocked(ctx, ev)
		return "split_view"
	}
	// A consistency proof counts as the log's word only when the log's own
	// node gossiped it; anyone else could attach a bad proof to frame it.
	if sl := w.seen[origin]; sl != nil && from == logPeer(origin) && req.Old < nc.cp.Size {
		if prev, ok := sl.bySize[req.Old]; ok {
			pc, err := w.openLogCheckpoint(prev)
			if err == nil && chain.VerifyConsistency(pc.cp, nc.cp, req.Proof) != nil {
				w.recordLocked(ctx, &Evidence{Origin: origin, Reason: "inconsistent",
					CheckpointA: string(prev), CheckpointB: string(nc.logNote)})
				return "split_view"
			}
		}
	}
	w.noteSeenLocked(origin, nc)
	return "ok"
}
