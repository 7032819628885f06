package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/iagon/gridchat/client/store"
	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/wire"
)

// Fragments (docs/PROTOCOL.md §9.1). The grid carries envelopes of at most max_ciphertext_bytes (64 KiB by
// default); a client envelope over that (an attachment, a long text, a large key distribution chunk) is sent
// as several fragment envelopes, each under its own random message ID, which the receiver keeps until it has
// them all and then processes the reassembled envelope under the set's ID.
const (
	// maxFragments caps the fragments of one envelope.
	maxFragments = 64
	// fragmentOverhead bounds the encoding of a fragment envelope besides its data.
	fragmentOverhead = 128
	// maxFragmentSetsPerSender caps the incomplete sets kept for one sender device; a new one drops that
	// sender's oldest.
	maxFragmentSetsPerSender = 4
	// maxFragmentSets caps the incomplete sets kept for all senders; a new one drops the oldest.
	maxFragmentSets = 16
	// fragmentKeep is how long an incomplete set is kept after its first fragment arrived.
	fragmentKeep = time.Hour
)

// fragment is one piece of an envelope too large for one grid envelope.
type fragment struct {
	Set   []byte `cbor:"1,keyasint"` // 16 bytes: the message ID the reassembled envelope is processed under
	Index uint32 `cbor:"2,keyasint"` // 0 … Count-1: the pieces concatenated in index order make the envelope
	Count uint32 `cbor:"3,keyasint"` // 2 … maxFragments
	Size  uint32 `cbor:"4,keyasint"` // bytes of the reassembled envelope
	Hash  []byte `cbor:"5,keyasint"` // SHA-256 of the reassembled envelope
	Data  []byte `cbor:"6,keyasint"`
}

func (f *fragment) validate() error {
	if len(f.Set) != wire.MessageIDSize || f.Count < 2 || f.Count > maxFragments || f.Index >= f.Count ||
		f.Size > MaxEnvelopeBytes || len(f.Hash) != sha256.Size || len(f.Data) == 0 || len(f.Data) > int(f.Size) {
		return fmt.Errorf("%w: fragment fields", ErrBadPayload)
	}
	return nil
}

// fragmentEnvelope cuts the encoded envelope env into fragment envelopes of at most limit bytes each, under
// set's ID, in index order.
func (c codec) fragmentEnvelope(set wire.MessageID, env []byte, limit int) ([][]byte, error) {
	per := limit - fragmentOverhead
	if per < 1 {
		return nil, fmt.Errorf("client: the grid's envelope limit of %d bytes leaves no room for a fragment", limit)
	}
	n := (len(env) + per - 1) / per
	if n < 2 || n > maxFragments {
		return nil, fmt.Errorf("client: envelope of %d bytes needs %d fragments of at most %d bytes (%d to %d allowed)",
			len(env), n, limit, 2, maxFragments)
	}
	sum := sha256.Sum256(env)
	out := make([][]byte, n)
	for i := range n {
		lo, hi := i*len(env)/n, (i+1)*len(env)/n
		f := &fragment{Set: set[:], Index: uint32(i), Count: uint32(n), Size: uint32(len(env)), Hash: sum[:], Data: env[lo:hi]}
		b, err := c.encodeEnvelope(&envelope{Frag: f})
		if err != nil {
			return nil, err
		}
		if len(b) > limit {
			return nil, fmt.Errorf("client: fragment of %d bytes over the grid's %d-byte envelope limit", len(b), limit)
		}
		out[i] = b
	}
	return out, nil
}

// fragSet is what a receiver keeps of an incomplete set besides the fragments' data.
type fragSet struct {
	TimeMS int64    `cbor:"1,keyasint"` // when its first fragment arrived
	Count  uint32   `cbor:"2,keyasint"`
	Size   uint32   `cbor:"3,keyasint"`
	Hash   []byte   `cbor:"4,keyasint"`
	Have   []uint32 `cbor:"5,keyasint"` // indexes held, in arrival order
	IDs    [][]byte `cbor:"6,keyasint"` // their fragment envelopes' message IDs, aligned with Have
}

func fragSetKey(from e2ee.DeviceID, set []byte) string {
	return from.String() + "/" + hex.EncodeToString(set)
}

func fragDataKey(setKey string, index uint32) string { return fmt.Sprintf("%s/%04x", setKey, index) }

// receiveFragment keeps one fragment and, once its set is complete, processes the reassembled envelope. Like
// receive, it returns an error only when the fragment should be delivered again: then the set is kept, and
// the repeat finds it complete and tries again.
func (e *engine) receiveFragment(ctx context.Context, id wire.MessageID, from e2ee.DeviceID, f *fragment) error {
	setID := hex.EncodeToString(f.Set)
	if _, seen := e.st.Get(bucketSeen, setID); seen {
		return e.markSeen(hex.EncodeToString(id[:]))
	}
	e.mu.Lock()
	whole, err := e.keepFragment(id, from, f)
	e.mu.Unlock()
	if err != nil || whole == nil {
		return err
	}
	setKey := fragSetKey(from, f.Set)
	env, err := e.cd.decodeEnvelope(whole)
	if err == nil && env.Frag != nil {
		err = fmt.Errorf("%w: fragment inside a fragment", ErrBadPayload)
	}
	if err != nil {
		e.cfg.log.Warn("dropping reassembled envelope that does not decode", "from", from, "err", err)
		return e.dropFragSet(setKey, setID)
	}
	if err := e.receiveEnvelope(ctx, setID, from, env); err != nil {
		return err
	}
	return e.dropFragSet(setKey, "")
}

// keepFragment stores f (unless its index is already held) and returns the reassembled envelope once the set
// is complete. A fragment that disagrees with its set, or a set whose bytes do not match its hash, is dropped.
// Called with e.mu held.
func (e *engine) keepFragment(id wire.MessageID, from e2ee.DeviceID, f *fragment) ([]byte, error) {
	setKey := fragSetKey(from, f.Set)
	var fs fragSet
	if v, ok := e.st.Get(bucketFragSets, setKey); ok {
		if err := e.cd.dec.Unmarshal(v, &fs); err != nil {
			return nil, err
		}
		if fs.Count != f.Count || fs.Size != f.Size || !bytes.Equal(fs.Hash, f.Hash) {
			e.cfg.log.Warn("dropping fragment that disagrees with its set", "from", from)
			return nil, nil
		}
	} else {
		e.makeRoomForFragSet(from)
		fs = fragSet{TimeMS: e.cfg.now().UnixMilli(), Count: f.Count, Size: f.Size, Hash: f.Hash}
	}
	held := 0
	for _, i := range fs.Have {
		held += len(e.fragData(setKey, i))
	}
	if !containsIndex(fs.Have, f.Index) {
		if held+len(f.Data) > int(f.Size) {
			e.cfg.log.Warn("dropping fragment set over its announced size", "from", from)
			return nil, e.dropFragSet(setKey, "")
		}
		fs.Have = append(fs.Have, f.Index)
		fs.IDs = append(fs.IDs, id[:])
		held += len(f.Data)
		v, err := e.cd.enc.Marshal(&fs)
		if err != nil {
			return nil, err
		}
		err = e.st.Update(func(b *store.Batch) error {
			b.Put(bucketFragSets, setKey, v)
			b.Put(bucketFrags, fragDataKey(setKey, f.Index), f.Data)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if len(fs.Have) < int(fs.Count) {
		return nil, nil
	}
	whole := make([]byte, 0, held)
	for i := range fs.Count {
		whole = append(whole, e.fragData(setKey, i)...)
	}
	if sum := sha256.Sum256(whole); len(whole) != int(fs.Size) || !bytes.Equal(sum[:], fs.Hash) {
		e.cfg.log.Warn("dropping fragment set whose bytes do not match its hash", "from", from)
		return nil, e.dropFragSet(setKey, "")
	}
	return whole, nil
}

func (e *engine) fragData(setKey string, index uint32) []byte {
	b, _ := e.st.Get(bucketFrags, fragDataKey(setKey, index))
	return b
}

func containsIndex(have []uint32, i uint32) bool {
	for _, h := range have {
		if h == i {
			return true
		}
	}
	return false
}

// makeRoomForFragSet drops the oldest incomplete sets until one more of from's fits both caps. Called with
// e.mu held.
func (e *engine) makeRoomForFragSet(from e2ee.DeviceID) {
	for {
		keys := e.st.Keys(bucketFragSets)
		var mine []string
		for _, k := range keys {
			if strings.HasPrefix(k, from.String()+"/") {
				mine = append(mine, k)
			}
		}
		var among []string
		switch {
		case len(mine) >= maxFragmentSetsPerSender:
			among = mine
		case len(keys) >= maxFragmentSets:
			among = keys
		default:
			return
		}
		oldest, oldestMS := "", int64(0)
		for _, k := range among {
			fs, _ := e.fragSet(k)
			if oldest == "" || fs.TimeMS < oldestMS {
				oldest, oldestMS = k, fs.TimeMS
			}
		}
		e.cfg.log.Warn("dropping incomplete fragment set to make room", "set", oldest)
		if err := e.dropFragSet(oldest, ""); err != nil {
			return
		}
	}
}

// fragSet reads a kept set; one that does not decode reads as the zero set (oldest, with no fragments).
func (e *engine) fragSet(setKey string) (fragSet, bool) {
	var fs fragSet
	v, ok := e.st.Get(bucketFragSets, setKey)
	if !ok {
		return fs, false
	}
	if err := e.cd.dec.Unmarshal(v, &fs); err != nil {
		return fragSet{}, true
	}
	return fs, true
}

// dropFragSet forgets a set and its fragments in one batch; the fragments' message IDs are marked seen (a
// repeat of one is acknowledged and dropped), and so is seenID if given (the set's own ID).
func (e *engine) dropFragSet(setKey, seenID string) error {
	fs, ok := e.fragSet(setKey)
	now := fmt.Appendf(nil, "%d", e.cfg.now().UnixMilli())
	return e.st.Update(func(b *store.Batch) error {
		if ok {
			b.Delete(bucketFragSets, setKey)
		}
		for _, k := range e.st.Keys(bucketFrags) {
			if strings.HasPrefix(k, setKey+"/") {
				b.Delete(bucketFrags, k)
			}
		}
		for _, id := range fs.IDs {
			b.Put(bucketSeen, hex.EncodeToString(id), now)
		}
		if seenID != "" {
			b.Put(bucketSeen, seenID, now)
		}
		return nil
	})
}

// pruneFragSets drops incomplete sets older than fragmentKeep. Called with e.mu held.
func (e *engine) pruneFragSets(now time.Time) {
	for _, k := range e.st.Keys(bucketFragSets) {
		if fs, _ := e.fragSet(k); now.Sub(time.UnixMilli(fs.TimeMS)) > fragmentKeep {
			_ = e.dropFragSet(k, "")
		}
	}
}

// newMessageID returns a random message ID.
func newMessageID() wire.MessageID {
	var id wire.MessageID
	rand.Read(id[:])
	return id
}
