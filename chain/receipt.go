package chain

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"filippo.io/torchwood"
	flog "github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

// Receipt limits.
const (
	// MaxReceiptSize bounds an encoded receipt.
	MaxReceiptSize = 32 << 10
	// MaxProofHashes bounds the hashes of an inclusion or consistency proof
	// (a tree of 2^63 leaves needs at most 63).
	MaxProofHashes = 64
	// MaxCheckpointSize bounds a signed checkpoint note with its cosignatures.
	MaxCheckpointSize = 16 << 10
)

const receiptHeader = "c2sp.org/tlog-proof@v1"

// Errors a receipt check returns; callers tell them apart with errors.Is.
var (
	// ErrMalformed reports a receipt or checkpoint that does not decode.
	ErrMalformed = errors.New("chain: malformed")
	// ErrBadSignature reports a checkpoint whose log signature is missing or
	// wrong, or that carries a wrong signature from a known key.
	ErrBadSignature = errors.New("chain: bad checkpoint signature")
	// ErrQuorum reports a checkpoint with fewer valid witness cosignatures
	// than the policy asks for.
	ErrQuorum = errors.New("chain: witness quorum not met")
	// ErrBadProof reports an inclusion or consistency proof that does not
	// verify (a tampered proof, entry or checkpoint).
	ErrBadProof = errors.New("chain: proof does not verify")
	// ErrDistrusted reports a log that was caught showing a split view.
	ErrDistrusted = errors.New("chain: log is distrusted")
)

// Checkpoint is a verified tree head of a log.
type Checkpoint struct {
	Origin string
	Size   uint64
	Root   [32]byte
	// Witnessed is when a quorum of the policy's witnesses had cosigned the
	// checkpoint: the Quorum-th earliest timestamp of their verified
	// c2sp.org/tlog-cosignature (cosignature/v1) signatures, each witness
	// counted once at its earliest. A witness signs its own clock's time, so
	// fewer than Quorum lying witnesses cannot move it earlier. It is zero
	// when the policy needs no cosignature, fewer than Quorum counted
	// cosignatures carry a timestamp, or the checkpoint was not opened
	// under a Policy.
	Witnessed time.Time
}

// Receipt proves that an entry is in a log: a C2SP tlog-proof, that is the
// entry's index, its inclusion proof and the signed (and cosigned) checkpoint
// the proof leads to.
type Receipt struct {
	// Index is the entry's position in the log.
	Index uint64
	// Proof is the RFC 6962 inclusion proof, leaf to root.
	Proof [][]byte
	// Checkpoint is the signed note of the checkpoint, with the log's
	// signature and the witnesses' cosignatures.
	Checkpoint []byte
	// Extra is the tlog-proof "extra" data, unauthenticated: gridchat puts
	// the anchor of the checkpoint there (see Anchor), which the reader
	// checks on the chain itself. Empty when absent.
	Extra []byte
}

// MaxExtraSize bounds a receipt's extra data.
const MaxExtraSize = 1024

// Marshal encodes r as a c2sp.org/tlog-proof@v1 document.
func (r *Receipt) Marshal() []byte {
	var b bytes.Buffer
	b.WriteString(receiptHeader + "\n")
	if len(r.Extra) > 0 {
		b.WriteString("extra " + base64.StdEncoding.EncodeToString(r.Extra) + "\n")
	}
	fmt.Fprintf(&b, "index %d\n", r.Index)
	for _, h := range r.Proof {
		b.WriteString(base64.StdEncoding.EncodeToString(h) + "\n")
	}
	b.WriteString("\n")
	b.Write(r.Checkpoint)
	return b.Bytes()
}

// ParseReceipt decodes a c2sp.org/tlog-proof@v1 document strictly.
func ParseReceipt(b []byte) (*Receipt, error) {
	if len(b) > MaxReceiptSize {
		return nil, fmt.Errorf("chain: parse receipt (%d bytes): %w", len(b), ErrMalformed)
	}
	bad := func(why string) error { return fmt.Errorf("chain: parse receipt: %s: %w", why, ErrMalformed) }
	s := string(b)
	hdr, rest, ok := strings.Cut(s, "\n")
	if !ok || hdr != receiptHeader {
		return nil, bad("missing header")
	}
	line, rest, ok := strings.Cut(rest, "\n")
	var extra []byte
	if e, isExtra := strings.CutPrefix(line, "extra "); ok && isExtra {
		var err error
		extra, err = base64.StdEncoding.Strict().DecodeString(e)
		if err != nil || len(extra) == 0 || len(extra) > MaxExtraSize {
			return nil, bad("invalid extra")
		}
		line, rest, ok = strings.Cut(rest, "\n")
	}
	idxs, found := strings.CutPrefix(line, "index ")
	if !ok || !found {
		return nil, bad("missing index line")
	}
	idx, err := strconv.ParseUint(idxs, 10, 63)
	if err != nil || strconv.FormatUint(idx, 10) != idxs {
		return nil, bad("invalid index")
	}
	r := &Receipt{Index: idx, Extra: extra}
	for {
		line, rest, ok = strings.Cut(rest, "\n")
		if !ok {
			return nil, bad("truncated proof")
		}
		if line == "" {
			break
		}
		if len(r.Proof) == MaxProofHashes {
			return nil, bad("too many proof hashes")
		}
		h, err := base64.StdEncoding.Strict().DecodeString(line)
		if err != nil || len(h) != sha256.Size {
			return nil, bad("invalid proof hash")
		}
		r.Proof = append(r.Proof, h)
	}
	if len(rest) == 0 || len(rest) > MaxCheckpointSize {
		return nil, bad("invalid checkpoint size")
	}
	r.Checkpoint = []byte(rest)
	return r, nil
}

// Policy says which checkpoints a verifier accepts: signed by the log named
// in the checkpoint's origin, cosigned by at least Quorum of Witnesses, from
// a log not distrusted.
type Policy struct {
	// LogKey returns the verifier of the log with the given origin. It is
	// called with unauthenticated input and must fail for unknown logs.
	LogKey func(origin string) (note.Verifier, error)
	// Witnesses are the cosignature verifiers (c2sp.org/tlog-cosignature)
	// whose cosignatures count towards the quorum.
	Witnesses []note.Verifier
	// Quorum is how many distinct Witnesses must have cosigned.
	Quorum int
	// Distrusted, if set, reports logs that must no longer be believed
	// (a witness that saw a split view says so).
	Distrusted func(origin string) bool
}

// OpenCheckpoint verifies a signed checkpoint note against p and returns
// the checkpoint.
func (p *Policy) OpenCheckpoint(signed []byte) (Checkpoint, error) {
	var cp Checkpoint
	if len(signed) > MaxCheckpointSize {
		return cp, fmt.Errorf("chain: open checkpoint: too large: %w", ErrMalformed)
	}
	origin, _, ok := strings.Cut(string(signed), "\n")
	if !ok || origin == "" {
		return cp, fmt.Errorf("chain: open checkpoint: no origin: %w", ErrMalformed)
	}
	if p.Distrusted != nil && p.Distrusted(origin) {
		return cp, fmt.Errorf("chain: open checkpoint of %q: %w", origin, ErrDistrusted)
	}
	if p.LogKey == nil {
		return cp, fmt.Errorf("chain: open checkpoint of %q: policy has no log keys: %w", origin, ErrBadSignature)
	}
	logV, err := p.LogKey(origin)
	if err != nil {
		return cp, fmt.Errorf("chain: open checkpoint of %q: unknown log: %v: %w", origin, err, ErrBadSignature)
	}
	vs := append([]note.Verifier{logV}, p.Witnesses...)
	n, err := note.Open(signed, note.VerifierList(vs...))
	if err != nil {
		var ue *note.UnverifiedNoteError
		var ie *note.InvalidSignatureError
		switch {
		case errors.As(err, &ue), errors.As(err, &ie):
			return cp, fmt.Errorf("chain: open checkpoint of %q: %v: %w", origin, err, ErrBadSignature)
		default:
			return cp, fmt.Errorf("chain: open checkpoint of %q: %v: %w", origin, err, ErrMalformed)
		}
	}
	logSigned := false
	cosigned := map[string]bool{}
	stamps := map[string]int64{} // earliest cosignature time of each witness
	for _, s := range n.Sigs {
		if s.Name == logV.Name() && s.Hash == logV.KeyHash() {
			logSigned = true
			continue
		}
		for _, w := range p.Witnesses {
			if s.Name != w.Name() || s.Hash != w.KeyHash() {
				continue
			}
			id := fmt.Sprintf("%s+%08x", s.Name, s.Hash)
			cosigned[id] = true
			// Only a cosignature/v1 key signs a timestamp; note.Open has
			// verified the signature over it.
			if _, ok := w.(*torchwood.CosignatureVerifier); !ok {
				continue
			}
			if t, err := torchwood.CosignatureTimestamp(s); err == nil {
				if old, seen := stamps[id]; !seen || t < old {
					stamps[id] = t
				}
			}
		}
	}
	if !logSigned {
		return cp, fmt.Errorf("chain: open checkpoint of %q: no log signature: %w", origin, ErrBadSignature)
	}
	if len(cosigned) < p.Quorum {
		return cp, fmt.Errorf("chain: open checkpoint of %q: %d of %d cosignatures: %w", origin, len(cosigned), p.Quorum, ErrQuorum)
	}
	cp, err = ParseCheckpointText([]byte(n.Text))
	if err != nil {
		return cp, err
	}
	if cp.Origin != logV.Name() {
		return cp, fmt.Errorf("chain: open checkpoint: origin %q signed by %q: %w", cp.Origin, logV.Name(), ErrBadSignature)
	}
	cp.Witnessed = quorumTime(stamps, p.Quorum)
	return cp, nil
}

// quorumTime returns the quorum-th earliest of stamps (Unix seconds), or
// the zero time if quorum is not positive or there are fewer stamps.
func quorumTime(stamps map[string]int64, quorum int) time.Time {
	if quorum <= 0 || len(stamps) < quorum {
		return time.Time{}
	}
	ts := make([]int64, 0, len(stamps))
	for _, t := range stamps {
		ts = append(ts, t)
	}
	slices.Sort(ts)
	return time.Unix(ts[quorum-1], 0).UTC()
}

// ParseCheckpointText parses the body of a c2sp.org/tlog-checkpoint note
// (origin, size, root; no extension lines) without checking signatures.
func ParseCheckpointText(text []byte) (Checkpoint, error) {
	var cp Checkpoint
	var c flog.Checkpoint
	rest, err := c.Unmarshal(text)
	if err != nil {
		return cp, fmt.Errorf("chain: parse checkpoint: %v: %w", err, ErrMalformed)
	}
	if len(rest) != 0 || len(c.Hash) != 32 || !bytes.Equal(c.Marshal(), text) {
		return cp, fmt.Errorf("chain: parse checkpoint: not canonical: %w", ErrMalformed)
	}
	cp.Origin, cp.Size = c.Origin, c.Size
	copy(cp.Root[:], c.Hash)
	return cp, nil
}

// LeafHash returns the RFC 6962 leaf hash of e.
func (e Entry) LeafHash() []byte {
	return rfc6962.DefaultHasher.HashLeaf(e[:])
}

// Verify checks rc for record r under p, offline: the checkpoint is signed by
// its log and cosigned by a quorum, and the inclusion proof leads from r's
// entry to the checkpoint's root.
func (p *Policy) Verify(rc *Receipt, r Record) (Checkpoint, error) {
	e, err := NewEntry(r)
	if err != nil {
		return Checkpoint{}, err
	}
	return p.VerifyEntry(rc, e)
}

// VerifyEntry is Verify for an already computed entry.
func (p *Policy) VerifyEntry(rc *Receipt, e Entry) (Checkpoint, error) {
	cp, err := p.OpenCheckpoint(rc.Checkpoint)
	if err != nil {
		return cp, fmt.Errorf("chain: verify receipt: %w", err)
	}
	if rc.Index >= cp.Size {
		return cp, fmt.Errorf("chain: verify receipt: index %d beyond size %d: %w", rc.Index, cp.Size, ErrBadProof)
	}
	if len(rc.Proof) > MaxProofHashes {
		return cp, fmt.Errorf("chain: verify receipt: %w", ErrBadProof)
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, rc.Index, cp.Size, e.LeafHash(), rc.Proof, cp.Root[:]); err != nil {
		return cp, fmt.Errorf("chain: verify receipt at %d of %s: %v: %w", rc.Index, cp.Origin, err, ErrBadProof)
	}
	return cp, nil
}

// VerifyConsistency checks that the tree old is a prefix of the tree new.
func VerifyConsistency(old, new Checkpoint, hashes [][]byte) error {
	if old.Origin != new.Origin {
		return fmt.Errorf("chain: consistency of %q and %q: different logs: %w", old.Origin, new.Origin, ErrBadProof)
	}
	if len(hashes) > MaxProofHashes {
		return fmt.Errorf("chain: consistency: %w", ErrBadProof)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, old.Size, new.Size, hashes, old.Root[:], new.Root[:]); err != nil {
		return fmt.Errorf("chain: consistency %d→%d of %s: %v: %w", old.Size, new.Size, old.Origin, err, ErrBadProof)
	}
	return nil
}

// LogSigner is the note signer of a log: an Ed25519 signed-note key
// (algorithm 1) whose name is the log's origin.
type LogSigner struct {
	name string
	hash uint32
	key  ed25519.PrivateKey
}

// NewLogSigner returns the signer of the log origin with key.
func NewLogSigner(origin string, key ed25519.PrivateKey) (*LogSigner, error) {
	if origin == "" || strings.ContainsAny(origin, "+ \t\n") {
		return nil, fmt.Errorf("chain: log signer: invalid origin %q", origin)
	}
	pub, ok := key.Public().(ed25519.PublicKey)
	if !ok || len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("chain: log signer: not an Ed25519 key")
	}
	return &LogSigner{name: origin, hash: noteKeyHash(origin, append([]byte{1}, pub...)), key: key}, nil
}

// Name returns the log's origin.
func (s *LogSigner) Name() string { return s.name }

// KeyHash returns the signed-note key hash.
func (s *LogSigner) KeyHash() uint32 { return s.hash }

// Sign signs a note body.
func (s *LogSigner) Sign(msg []byte) ([]byte, error) { return ed25519.Sign(s.key, msg), nil }

// Verifier returns the note verifier of the signer's public key.
func (s *LogSigner) Verifier() note.Verifier {
	v, err := NewLogVerifier(s.name, s.key.Public().(ed25519.PublicKey))
	if err != nil {
		// The name and key were checked by NewLogSigner.
		panic(err)
	}
	return v
}

// NewLogVerifier returns the note verifier of the log origin with public key pub.
func NewLogVerifier(origin string, pub ed25519.PublicKey) (note.Verifier, error) {
	vkey, err := note.NewEd25519VerifierKey(origin, pub)
	if err != nil {
		return nil, fmt.Errorf("chain: log verifier of %q: %w", origin, err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("chain: log verifier of %q: %w", origin, err)
	}
	return v, nil
}

func noteKeyHash(name string, key []byte) uint32 {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte("\n"))
	h.Write(key)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

// Text returns the checkpoint's c2sp.org/tlog-checkpoint note body.
func (c Checkpoint) Text() string {
	return string(flog.Checkpoint{Origin: c.Origin, Size: c.Size, Hash: c.Root[:]}.Marshal())
}

// Anchor is the extra data of an anchored receipt: where its checkpoint was
// anchored. Encoded as "anchor <chain> <txid>".
type Anchor struct {
	Chain string
	TxID  string
}

// Marshal encodes a as receipt extra data.
func (a Anchor) Marshal() []byte { return []byte("anchor " + a.Chain + " " + a.TxID) }

// ParseAnchor decodes receipt extra data as an Anchor.
func ParseAnchor(b []byte) (Anchor, error) {
	f := strings.Fields(string(b))
	if len(f) != 3 || f[0] != "anchor" || strings.Join(f, " ") != string(b) {
		return Anchor{}, fmt.Errorf("chain: parse anchor: %w", ErrMalformed)
	}
	return Anchor{Chain: f[1], TxID: f[2]}, nil
}
