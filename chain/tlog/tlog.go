// Package tlog is the node's embedded key-publication log: a Tessera
// transparency log (POSIX driver) in a data directory, whose checkpoints are
// C2SP signed notes, witnessed by the grid before a publication's receipt is
// handed out.
package tlog

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/iagon/gridchat/chain"
	"github.com/transparency-dev/tessera"
	"github.com/transparency-dev/tessera/client"
	"github.com/transparency-dev/tessera/storage/posix"
	"golang.org/x/mod/sumdb/note"
)

// Cosigner collects witness cosignatures on a signed checkpoint. prove
// returns a consistency proof between two tree sizes of this log, for
// witnesses that saw an older checkpoint. Cosign returns the checkpoint note
// with the cosignatures appended.
type Cosigner interface {
	Cosign(ctx context.Context, signedCheckpoint []byte, prove func(ctx context.Context, old, new uint64) ([][]byte, error)) ([]byte, error)
}

// Config configures a Log. Dir, Origin and Key are required.
type Config struct {
	// Dir is the log's directory; it holds the public tiles, entry bundles
	// and checkpoint.
	Dir string
	// Origin is the log's checkpoint origin, e.g. "gridchat.grid/log/<peerID>".
	Origin string
	// Key signs checkpoints.
	Key ed25519.PrivateKey
	// Cosigner gathers witness cosignatures; nil publishes checkpoints with
	// the log's signature only.
	Cosigner Cosigner
	// Policy verifies receipts in Verify. Its LogKey defaults to this log's
	// key only.
	Policy chain.Policy
	// Timing tunes the publication latency.
	Timing Timing
	// Logger receives the log's messages; nil discards them.
	Logger *slog.Logger
}

// Timing holds the delays that bound a publication's latency: an entry waits
// at most BatchMaxAge to be sequenced, then at most CheckpointInterval for a
// checkpoint that covers it.
type Timing struct {
	// BatchMaxAge is how long an entry may wait for its batch to fill.
	BatchMaxAge time.Duration
	// BatchMaxSize is the largest batch sequenced at once.
	BatchMaxSize uint
	// CheckpointInterval is the least time between two checkpoints
	// (Tessera's minimum is 100 ms).
	CheckpointInterval time.Duration
	// PollInterval is how often waiting publications look for a new checkpoint.
	PollInterval time.Duration
	// ShutdownTimeout bounds how long Close waits for queued entries.
	ShutdownTimeout time.Duration
}

// DefaultTiming returns the timing of a node: publications take about
// 100–150 ms on an idle log.
func DefaultTiming() Timing {
	return Timing{
		BatchMaxAge:        5 * time.Millisecond,
		BatchMaxSize:       256,
		CheckpointInterval: 100 * time.Millisecond,
		PollInterval:       5 * time.Millisecond,
		ShutdownTimeout:    5 * time.Second,
	}
}

func (t *Timing) fill() {
	d := DefaultTiming()
	if t.BatchMaxAge <= 0 {
		t.BatchMaxAge = d.BatchMaxAge
	}
	if t.BatchMaxSize == 0 {
		t.BatchMaxSize = d.BatchMaxSize
	}
	if t.CheckpointInterval <= 0 {
		t.CheckpointInterval = d.CheckpointInterval
	}
	if t.PollInterval <= 0 {
		t.PollInterval = d.PollInterval
	}
	if t.ShutdownTimeout <= 0 {
		t.ShutdownTimeout = d.ShutdownTimeout
	}
}

// ErrClosed is returned by a Log after Close.
var ErrClosed = errors.New("tlog: log closed")

// Log is an append-only, witnessed log of key publications.
type Log struct {
	cfg      Config
	signer   *chain.LogSigner
	log      *slog.Logger
	add      tessera.AddFn
	reader   tessera.LogReader
	awaiter  *tessera.PublicationAwaiter
	shutdown func(context.Context) error
	cancel   context.CancelFunc

	// headSem serialises witnessing rounds; head is the latest witnessed
	// checkpoint.
	headSem chan struct{}
	headMu  sync.Mutex
	head    *witnessed

	anchorMu sync.Mutex
	anchors  []anchorRecord

	closeMu   sync.RWMutex
	closed    bool
	closeErr  error
	closeOnce sync.Once
}

type witnessed struct {
	note []byte
	cp   chain.Checkpoint
}

// Open opens (creating if needed) the log in cfg.Dir.
func Open(ctx context.Context, cfg Config) (*Log, error) {
	if cfg.Dir == "" {
		return nil, errors.New("tlog: open: no directory")
	}
	signer, err := chain.NewLogSigner(cfg.Origin, cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("tlog: open %s: %w", cfg.Dir, err)
	}
	cfg.Timing.fill()
	if cfg.Policy.LogKey == nil {
		v := signer.Verifier()
		cfg.Policy.LogKey = func(origin string) (note.Verifier, error) {
			if origin != v.Name() {
				return nil, fmt.Errorf("unknown log %q", origin)
			}
			return v, nil
		}
	}
	l := &Log{cfg: cfg, signer: signer, log: cfg.Logger, headSem: make(chan struct{}, 1)}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("tlog: open %s: %w", cfg.Dir, err)
	}
	// Tessera's goroutines live until Close, not until the caller's ctx ends.
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	drv, err := posix.New(bg, posix.Config{Path: cfg.Dir})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("tlog: open %s: %w", cfg.Dir, err)
	}
	opts := tessera.NewAppendOptions().
		WithCheckpointSigner(signer).
		WithBatching(cfg.Timing.BatchMaxSize, cfg.Timing.BatchMaxAge).
		WithCheckpointInterval(cfg.Timing.CheckpointInterval).
		WithCheckpointRepublishInterval(0).
		WithShutdownTimeout(cfg.Timing.ShutdownTimeout)
	app, shutdown, reader, err := tessera.NewAppender(bg, drv, opts)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("tlog: open %s: %w", cfg.Dir, err)
	}
	l.add, l.reader, l.shutdown, l.cancel = app.Add, reader, shutdown, cancel
	if err := l.loadAnchors(); err != nil {
		shutdown(ctx)
		cancel()
		return nil, fmt.Errorf("tlog: open %s: anchors: %w", cfg.Dir, err)
	}
	l.awaiter = tessera.NewPublicationAwaiter(bg, reader.ReadCheckpoint, cfg.Timing.PollInterval)
	return l, nil
}

// Origin returns the log's checkpoint origin.
func (l *Log) Origin() string { return l.signer.Name() }

// Verifier returns the note verifier of the log's checkpoints.
func (l *Log) Verifier() note.Verifier { return l.signer.Verifier() }

// Publish appends r's entry and returns its receipt once a witnessed
// checkpoint covers it.
func (l *Log) Publish(ctx context.Context, r chain.Record) (*chain.Receipt, error) {
	e, err := chain.NewEntry(r)
	if err != nil {
		return nil, fmt.Errorf("tlog: publish: %w", err)
	}
	return l.PublishEntry(ctx, e)
}

// PublishEntry is Publish for a computed entry.
func (l *Log) PublishEntry(ctx context.Context, e chain.Entry) (*chain.Receipt, error) {
	l.closeMu.RLock()
	defer l.closeMu.RUnlock()
	if l.closed {
		return nil, fmt.Errorf("tlog: publish: %w", ErrClosed)
	}
	idx, _, err := l.awaiter.Await(ctx, l.add(ctx, tessera.NewEntry(e[:])))
	if err != nil {
		return nil, fmt.Errorf("tlog: publish: %w", err)
	}
	h, err := l.witnessedHead(ctx, idx.Index+1)
	if err != nil {
		return nil, fmt.Errorf("tlog: publish entry %d: %w", idx.Index, err)
	}
	p, err := l.InclusionProof(ctx, idx.Index, h.cp.Size)
	if err != nil {
		return nil, fmt.Errorf("tlog: publish entry %d: %w", idx.Index, err)
	}
	return &chain.Receipt{Index: idx.Index, Proof: p, Checkpoint: h.note}, nil
}

// witnessedHead returns a witnessed checkpoint of at least minSize entries,
// running a witnessing round if the latest one is smaller. Rounds are
// serialised, so publications waiting together share one round.
func (l *Log) witnessedHead(ctx context.Context, minSize uint64) (*witnessed, error) {
	select {
	case l.headSem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-l.headSem }()
	l.headMu.Lock()
	h := l.head
	l.headMu.Unlock()
	if h != nil && h.cp.Size >= minSize {
		return h, nil
	}
	raw, err := l.reader.ReadCheckpoint(ctx)
	if err != nil {
		return nil, fmt.Errorf("read checkpoint: %w", err)
	}
	cp, err := l.openOwn(raw)
	if err != nil {
		return nil, err
	}
	if cp.Size < minSize {
		return nil, fmt.Errorf("checkpoint of size %d does not cover %d", cp.Size, minSize)
	}
	if l.cfg.Cosigner != nil {
		raw, err = l.cfg.Cosigner.Cosign(ctx, raw, l.ConsistencyProof)
		if err != nil {
			return nil, fmt.Errorf("witness checkpoint %d: %w", cp.Size, err)
		}
	}
	h = &witnessed{note: raw, cp: cp}
	l.headMu.Lock()
	l.head = h
	l.headMu.Unlock()
	return h, nil
}

func (l *Log) openOwn(raw []byte) (chain.Checkpoint, error) {
	n, err := note.Open(raw, note.VerifierList(l.signer.Verifier()))
	if err != nil {
		return chain.Checkpoint{}, fmt.Errorf("open own checkpoint: %w", err)
	}
	return chain.ParseCheckpointText([]byte(n.Text))
}

// Checkpoint returns the latest witnessed checkpoint as a signed note,
// witnessing the current checkpoint if none was yet.
func (l *Log) Checkpoint(ctx context.Context) ([]byte, error) {
	l.headMu.Lock()
	h := l.head
	l.headMu.Unlock()
	if h != nil {
		return h.note, nil
	}
	h, err := l.witnessedHead(ctx, 0)
	if err != nil {
		return nil, fmt.Errorf("tlog: checkpoint: %w", err)
	}
	return h.note, nil
}

// PublishedCheckpoint returns the log-signed checkpoint on disk (not yet
// necessarily witnessed).
func (l *Log) PublishedCheckpoint(ctx context.Context) ([]byte, chain.Checkpoint, error) {
	raw, err := l.reader.ReadCheckpoint(ctx)
	if err != nil {
		return nil, chain.Checkpoint{}, fmt.Errorf("tlog: read checkpoint: %w", err)
	}
	cp, err := l.openOwn(raw)
	if err != nil {
		return nil, cp, fmt.Errorf("tlog: read checkpoint: %w", err)
	}
	return raw, cp, nil
}

// InclusionProof returns the inclusion proof of entry index in the tree of
// the given size.
func (l *Log) InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error) {
	pb, err := client.NewProofBuilder(ctx, size, l.reader.ReadTile)
	if err != nil {
		return nil, fmt.Errorf("tlog: inclusion proof %d@%d: %w", index, size, err)
	}
	p, err := pb.InclusionProof(ctx, index)
	if err != nil {
		return nil, fmt.Errorf("tlog: inclusion proof %d@%d: %w", index, size, err)
	}
	return p, nil
}

// ConsistencyProof returns the proof that the tree of size old is a prefix
// of the tree of size new.
func (l *Log) ConsistencyProof(ctx context.Context, old, new uint64) ([][]byte, error) {
	pb, err := client.NewProofBuilder(ctx, new, l.reader.ReadTile)
	if err != nil {
		return nil, fmt.Errorf("tlog: consistency proof %d→%d: %w", old, new, err)
	}
	p, err := pb.ConsistencyProof(ctx, old, new)
	if err != nil {
		return nil, fmt.Errorf("tlog: consistency proof %d→%d: %w", old, new, err)
	}
	return p, nil
}

// Entry returns the entry at index in a tree of the given size.
func (l *Log) Entry(ctx context.Context, index, size uint64) (chain.Entry, error) {
	var e chain.Entry
	b, err := client.GetEntryBundle(ctx, l.reader.ReadEntryBundle, index/256, size)
	if err != nil {
		return e, fmt.Errorf("tlog: entry %d: %w", index, err)
	}
	i := index % 256
	if i >= uint64(len(b.Entries)) || len(b.Entries[i]) != chain.EntrySize {
		return e, fmt.Errorf("tlog: entry %d: %w", index, chain.ErrMalformed)
	}
	copy(e[:], b.Entries[i])
	return e, nil
}

// Verify checks a receipt for r under the log's policy.
func (l *Log) Verify(rc *chain.Receipt, r chain.Record) (chain.Checkpoint, error) {
	return l.cfg.Policy.Verify(rc, r)
}

// Close waits for queued entries to be checkpointed and stops the log. It is
// idempotent.
func (l *Log) Close() error {
	l.closeOnce.Do(func() {
		l.closeMu.Lock()
		l.closed = true
		l.closeMu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), l.cfg.Timing.ShutdownTimeout)
		defer cancel()
		if err := l.shutdown(ctx); err != nil {
			l.closeErr = fmt.Errorf("tlog: close %s: %w", l.cfg.Dir, err)
		}
		l.cancel()
	})
	return l.closeErr
}

var (
	_ chain.Adapter = (*Log)(nil)
)
