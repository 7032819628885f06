package tlog

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/iagon/gridchat/chain"
)

// anchorsFile lists, one JSON object a line, the anchors of this log's
// checkpoints.
const anchorsFile = "anchors.jsonl"

// maxAnchors bounds the anchors loaded at Open.
const maxAnchors = 1 << 16

// ErrNotAnchored is returned by AnchoredReceipt when no anchored checkpoint
// covers the entry yet.
var ErrNotAnchored = errors.New("tlog: entry not anchored yet")

type anchorRecord struct {
	Chain      string `json:"chain"`
	TxID       string `json:"tx"`
	Checkpoint []byte `json:"checkpoint"`
	size       uint64
}

func (l *Log) loadAnchors() error {
	f, err := os.Open(filepath.Join(l.cfg.Dir, anchorsFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 2*chain.MaxCheckpointSize)
	for sc.Scan() && len(l.anchors) < maxAnchors {
		var a anchorRecord
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			// A torn last line after a crash: the anchor is recorded again
			// at the next round.
			continue
		}
		cp, err := l.openOwn(a.Checkpoint)
		if err != nil {
			continue
		}
		a.size = cp.Size
		l.anchors = append(l.anchors, a)
	}
	return sc.Err()
}

// RecordAnchor remembers that signed, a checkpoint of this log, was anchored
// at ref, so that AnchoredReceipt can name the anchor.
func (l *Log) RecordAnchor(ref chain.AnchorRef, signed []byte) error {
	cp, err := l.openOwn(signed)
	if err != nil {
		return fmt.Errorf("tlog: record anchor: %w", err)
	}
	if cp.Size != ref.Size || !bytes.Equal(cp.Root[:], ref.Root) {
		return fmt.Errorf("tlog: record anchor %s: checkpoint %d does not match anchor %d", ref.TxID, cp.Size, ref.Size)
	}
	a := anchorRecord{Chain: ref.Chain, TxID: ref.TxID, Checkpoint: signed, size: cp.Size}
	line, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("tlog: record anchor: %w", err)
	}
	l.anchorMu.Lock()
	defer l.anchorMu.Unlock()
	f, err := os.OpenFile(filepath.Join(l.cfg.Dir, anchorsFile), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("tlog: record anchor: %w", err)
	}
	_, err = f.Write(append(line, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("tlog: record anchor: %w", err)
	}
	l.anchors = append(l.anchors, a)
	return nil
}

// AnchoredReceipt returns a receipt for the entry at index against the
// latest anchored checkpoint, naming the anchor in the receipt's extra data.
func (l *Log) AnchoredReceipt(ctx context.Context, index uint64) (*chain.Receipt, error) {
	l.anchorMu.Lock()
	var best *anchorRecord
	for i := range l.anchors {
		if a := &l.anchors[i]; a.size > index && (best == nil || a.size > best.size) {
			best = a
		}
	}
	l.anchorMu.Unlock()
	if best == nil {
		return nil, fmt.Errorf("tlog: anchored receipt %d: %w", index, ErrNotAnchored)
	}
	p, err := l.InclusionProof(ctx, index, best.size)
	if err != nil {
		return nil, err
	}
	return &chain.Receipt{Index: index, Proof: p, Checkpoint: best.Checkpoint,
		Extra: chain.Anchor{Chain: best.Chain, TxID: best.TxID}.Marshal()}, nil
}
