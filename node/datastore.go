package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrDatastoreClosed is returned by the node's datastore for an operation
// that arrives after Close closed it.
var ErrDatastoreClosed = errors.New("node: datastore closed")

// closingStore guards the node's Pebble datastore across Close. Pebble panics
// on any use of a closed database, and a panic kills the whole process; Close
// stops every service that writes before it closes the datastore, and this
// guard is the second line: Close waits for operations in flight, and an
// operation that still arrives afterwards fails with ErrDatastoreClosed and
// is counted by owner. The DHT's request handlers run on the libp2p host's
// goroutines, which nothing can wait for, so a request from a peer that
// arrived just before the host closed may end here ("dht"); any other late
// operation ("service") names a goroutine that outlived its owner, and is
// logged as a warning.
type closingStore struct {
	ds.Batching
	log  *slog.Logger
	late *prometheus.CounterVec

	mu     sync.RWMutex // held for reading by every operation, for writing by Close
	closed atomic.Bool
}

func newClosingStore(d ds.Batching, log *slog.Logger, reg prometheus.Registerer) (*closingStore, error) {
	late := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gridchat_datastore_after_close_total",
		Help: "Datastore operations refused because they arrived after the node closed its datastore, " +
			"by owner: dht (a peer's request served by the DHT) or service.",
	}, []string{"owner"})
	if err := reg.Register(late); err != nil {
		return nil, fmt.Errorf("node: datastore metrics: %w", err)
	}
	return &closingStore{Batching: d, log: log, late: late}, nil
}

// enter admits one operation; the caller must call s.mu.RUnlock when it ends.
func (s *closingStore) enter(op string, key ds.Key) error {
	s.mu.RLock()
	if s.closed.Load() {
		s.mu.RUnlock()
		if key.IsDescendantOf(ds.NewKey(dhtNamespace)) {
			s.late.WithLabelValues("dht").Inc()
			s.log.Debug("DHT request served after the datastore closed", "op", op, "key", key.String())
		} else {
			s.late.WithLabelValues("service").Inc()
			s.log.Warn("datastore used after close", "op", op, "key", key.String())
		}
		return fmt.Errorf("node: datastore %s %s: %w", op, key, ErrDatastoreClosed)
	}
	return nil
}

func (s *closingStore) Get(ctx context.Context, key ds.Key) ([]byte, error) {
	if err := s.enter("get", key); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	return s.Batching.Get(ctx, key)
}

func (s *closingStore) Has(ctx context.Context, key ds.Key) (bool, error) {
	if err := s.enter("has", key); err != nil {
		return false, err
	}
	defer s.mu.RUnlock()
	return s.Batching.Has(ctx, key)
}

func (s *closingStore) GetSize(ctx context.Context, key ds.Key) (int, error) {
	if err := s.enter("getsize", key); err != nil {
		return -1, err
	}
	defer s.mu.RUnlock()
	return s.Batching.GetSize(ctx, key)
}

// Query opens the iterator under the guard; the datastore's Close waits for
// open result streams and interrupts them itself.
func (s *closingStore) Query(ctx context.Context, q query.Query) (query.Results, error) {
	if err := s.enter("query", ds.NewKey(q.Prefix)); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	return s.Batching.Query(ctx, q)
}

func (s *closingStore) Put(ctx context.Context, key ds.Key, value []byte) error {
	if err := s.enter("put", key); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	return s.Batching.Put(ctx, key, value)
}

func (s *closingStore) Delete(ctx context.Context, key ds.Key) error {
	if err := s.enter("delete", key); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	return s.Batching.Delete(ctx, key)
}

func (s *closingStore) Sync(ctx context.Context, prefix ds.Key) error {
	if err := s.enter("sync", prefix); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	return s.Batching.Sync(ctx, prefix)
}

func (s *closingStore) Batch(ctx context.Context) (ds.Batch, error) {
	if err := s.enter("batch", ds.RawKey("/")); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	b, err := s.Batching.Batch(ctx)
	if err != nil {
		return nil, err
	}
	return &closingBatch{Batch: b, s: s}, nil
}

// Close waits for the operations in flight, refuses every later one, and
// closes the datastore. It is idempotent.
func (s *closingStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Swap(true) {
		return nil
	}
	return s.Batching.Close()
}

// closingBatch commits under the store's guard.
type closingBatch struct {
	ds.Batch
	s *closingStore
}

func (b *closingBatch) Commit(ctx context.Context) error {
	if err := b.s.enter("commit", ds.RawKey("/")); err != nil {
		return err
	}
	defer b.s.mu.RUnlock()
	return b.Batch.Commit(ctx)
}
