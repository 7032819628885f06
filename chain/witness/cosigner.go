package witness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/iagon/gridchat/chain"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/mod/sumdb/note"
)

// Peer is a witness a log asks for cosignatures.
type Peer struct {
	ID       peer.ID
	Verifier note.Verifier
}

// Cosigner gathers cosignatures for one log from a set of grid witnesses and
// gossips the witnessed checkpoints. It implements tlog.Cosigner.
type Cosigner struct {
	w       *Witness
	peers   []Peer
	quorum  int
	timeout time.Duration

	mu        sync.Mutex
	known     map[peer.ID]uint64 // size each witness last cosigned
	announced uint64             // size last gossiped
}

// ErrNoQuorum is returned when fewer witnesses than the quorum cosigned.
var ErrNoQuorum = errors.New("witness: quorum not reached")

// NewCosigner returns a Cosigner that asks peers and needs quorum of them.
// Each witness request is bounded by the witness's StreamTimeout.
func (w *Witness) NewCosigner(peers []Peer, quorum int) *Cosigner {
	return &Cosigner{w: w, peers: peers, quorum: quorum, timeout: w.cfg.Limits.StreamTimeout, known: map[peer.ID]uint64{}}
}

// Cosign asks every witness to cosign signed (a checkpoint signed by the
// log), returns the note with the cosignatures of those that did, and
// gossips it. It fails with ErrNoQuorum if fewer than the quorum cosigned.
func (c *Cosigner) Cosign(ctx context.Context, signed []byte, prove func(ctx context.Context, old, new uint64) ([][]byte, error)) ([]byte, error) {
	text, _, ok := bytes.Cut(signed, []byte("\n\n"))
	if !ok {
		return nil, fmt.Errorf("witness: cosign: %w", errMalformed)
	}
	cp, err := chain.ParseCheckpointText(append(text, '\n'))
	if err != nil {
		return nil, fmt.Errorf("witness: cosign: %w", err)
	}
	type result struct {
		line []byte
		err  error
	}
	results := make([]result, len(c.peers))
	var wg sync.WaitGroup
	for i, p := range c.peers {
		wg.Go(func() {
			line, err := c.cosignOne(ctx, p, cp, signed, prove)
			results[i] = result{line, err}
		})
	}
	wg.Wait()
	out := append([]byte(nil), signed...)
	n := 0
	var errs []error
	for i, r := range results {
		if r.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.peers[i].ID, r.err))
			continue
		}
		out = append(out, r.line...)
		n++
	}
	if n < c.quorum {
		return nil, fmt.Errorf("witness: cosign %s@%d: %d of %d cosignatures: %w (%v)", cp.Origin, cp.Size, n, c.quorum, ErrNoQuorum, errors.Join(errs...))
	}
	c.announce(ctx, cp, out, prove)
	return out, nil
}

func (c *Cosigner) announce(ctx context.Context, cp chain.Checkpoint, cosigned []byte, prove func(ctx context.Context, old, new uint64) ([][]byte, error)) {
	c.mu.Lock()
	old := c.announced
	c.mu.Unlock()
	var proof [][]byte
	if old > 0 && old < cp.Size {
		p, err := prove(ctx, old, cp.Size)
		if err != nil {
			c.w.log.Warn("witness: gossip checkpoint: no consistency proof", "origin", cp.Origin, "err", err)
			return
		}
		proof = p
	} else if old > cp.Size {
		return
	}
	if err := c.w.Announce(ctx, old, proof, cosigned); err != nil {
		c.w.log.Warn("witness: gossip checkpoint", "origin", cp.Origin, "err", err)
		return
	}
	c.mu.Lock()
	c.announced = max(c.announced, cp.Size)
	c.mu.Unlock()
}

// cosignOne runs add-checkpoint against one witness, retrying once with the
// size the witness reports on a conflict.
func (c *Cosigner) cosignOne(ctx context.Context, p Peer, cp chain.Checkpoint, signed []byte, prove func(ctx context.Context, old, new uint64) ([][]byte, error)) ([]byte, error) {
	c.mu.Lock()
	old := c.known[p.ID]
	c.mu.Unlock()
	for attempt := 0; attempt < 2; attempt++ {
		if old > cp.Size {
			return nil, fmt.Errorf("witness holds size %d beyond %d", old, cp.Size)
		}
		var proof [][]byte
		if old > 0 && old < cp.Size {
			var err error
			if proof, err = prove(ctx, old, cp.Size); err != nil {
				return nil, err
			}
		}
		resp, err := c.call(ctx, p.ID, &request{Old: old, Proof: proof, Checkpoint: signed})
		if err != nil {
			return nil, err
		}
		switch resp.Status {
		case StatusOK:
			line, err := checkCosignature(cp, resp.Payload, p.Verifier)
			if err != nil {
				return nil, err
			}
			c.mu.Lock()
			c.known[p.ID] = cp.Size
			c.mu.Unlock()
			return line, nil
		case StatusConflict:
			s := strings.TrimSuffix(string(resp.Payload), "\n")
			n, err := strconv.ParseUint(s, 10, 63)
			if err != nil {
				return nil, fmt.Errorf("conflict with bad size: %w", errMalformed)
			}
			old = n
		default:
			return nil, fmt.Errorf("witness refused with status %d", resp.Status)
		}
	}
	return nil, errors.New("witness kept reporting a conflicting size")
}

// checkCosignature returns the cosignature line in payload that v made on cp.
func checkCosignature(cp chain.Checkpoint, payload []byte, v note.Verifier) ([]byte, error) {
	msg := append([]byte(cp.Text()+"\n"), payload...)
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil || len(n.Sigs) != 1 || len(n.UnverifiedSigs) != 0 {
		return nil, fmt.Errorf("witness returned an invalid cosignature: %v", err)
	}
	return []byte("— " + n.Sigs[0].Name + " " + n.Sigs[0].Base64 + "\n"), nil
}

func (c *Cosigner) call(ctx context.Context, id peer.ID, req *request) (*response, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	s, err := c.w.cfg.Host.NewStream(ctx, id, c.w.proto)
	if err != nil {
		return nil, fmt.Errorf("open stream: %w", err)
	}
	defer s.Close()
	dl, _ := ctx.Deadline()
	if err := s.SetDeadline(dl); err != nil {
		s.Reset()
		return nil, err
	}
	if err := writeFrame(s, req.marshal()); err != nil {
		s.Reset()
		return nil, fmt.Errorf("send: %w", err)
	}
	if err := s.CloseWrite(); err != nil {
		s.Reset()
		return nil, fmt.Errorf("send: %w", err)
	}
	b, err := readFrame(s, c.w.cfg.Limits.MaxMessage)
	if err != nil {
		s.Reset()
		return nil, fmt.Errorf("receive: %w", err)
	}
	return parseResponse(b)
}
