// Package cpace implements the CPace balanced password-authenticated key
// exchange (draft-irtf-cfrg-cpace) with the cipher suite CPACE-RISTR255-SHA512,
// in the initiator-responder setting.
//
// The initiator (party A) sends its share Ya; the responder (party B) answers
// with Yb; both derive the intermediate session key ISK from the password
// related string PRS, the channel identifier CI, the session identifier sid,
// the secret point K and the transcript lv_cat(Ya,ADa) || lv_cat(Yb,ADb).
// Key confirmation and key derivation from ISK are the caller's job.
package cpace

import (
	"crypto/sha512"
	"errors"
	"fmt"
	"io"

	"github.com/gtank/ristretto255"
)

// DSI is the domain-separation identifier of the ristretto255 group
// environment.
const DSI = "CPaceRistretto255"

const (
	// ShareSize is the size in bytes of an encoded public share.
	ShareSize = 32
	// ISKSize is the size in bytes of the intermediate session key.
	ISKSize = sha512.Size
	// hashBlockSize is SHA-512's input block size, s_in_bytes.
	hashBlockSize = 128
)

// ErrInvalidShare reports a received share that does not decode to a group
// element or that yields the neutral element; the protocol must abort.
var ErrInvalidShare = errors.New("cpace: invalid peer share")

// ErrUsed reports a second use of a single-use protocol state.
var ErrUsed = errors.New("cpace: state already used")

// appendLen appends the LEB128 encoding of n to b.
func appendLen(b []byte, n int) []byte {
	for {
		if n < 128 {
			return append(b, byte(n))
		}
		b = append(b, byte(n&0x7f)|0x80)
		n >>= 7
	}
}

// prependLen returns prepend_len(data).
func prependLen(data []byte) []byte {
	return append(appendLen(nil, len(data)), data...)
}

// lvCat returns lv_cat(args...): each argument prefixed with its LEB128 length.
func lvCat(args ...[]byte) []byte {
	var out []byte
	for _, a := range args {
		out = appendLen(out, len(a))
		out = append(out, a...)
	}
	return out
}

// generatorString returns generator_string(DSI, PRS, CI, sid, 128).
func generatorString(prs, ci, sid []byte) []byte {
	zpad := hashBlockSize - 1 - len(prependLen(prs)) - len(prependLen([]byte(DSI)))
	if zpad < 0 {
		zpad = 0
	}
	return lvCat([]byte(DSI), prs, make([]byte, zpad), ci, sid)
}

// Generator returns the password-dependent generator g derived from PRS, CI
// and sid by hashing the generator string with SHA-512 and applying
// ristretto255 element derivation.
func Generator(prs, ci, sid []byte) *ristretto255.Element {
	h := sha512.Sum512(generatorString(prs, ci, sid))
	g, err := ristretto255.NewElement().SetUniformBytes(h[:])
	if err != nil {
		// SetUniformBytes fails only on a wrong input length, and h is
		// always 64 bytes.
		panic("cpace: element derivation: " + err.Error())
	}
	return g
}

// SampleScalar reads 32 bytes from rand, clears the bits above the group's
// 252-bit size and returns the little-endian scalar, as the draft
// recommends. A zero scalar is rejected and sampled again.
func SampleScalar(rand io.Reader) (*ristretto255.Scalar, error) {
	var b [32]byte
	for range 8 {
		if _, err := io.ReadFull(rand, b[:]); err != nil {
			return nil, fmt.Errorf("cpace: sample scalar: %w", err)
		}
		b[31] &= 0x0f
		s, err := ristretto255.NewScalar().SetCanonicalBytes(b[:])
		if err != nil {
			return nil, fmt.Errorf("cpace: sample scalar: %w", err)
		}
		if s.Equal(ristretto255.NewScalar()) == 0 {
			return s, nil
		}
	}
	return nil, errors.New("cpace: sample scalar: random source returns zeros")
}

// ScalarMult returns encode(y * g).
func ScalarMult(y *ristretto255.Scalar, g *ristretto255.Element) []byte {
	return ristretto255.NewElement().ScalarMult(y, g).Bytes()
}

// ScalarMultVfy decodes X and returns encode(y * X). It returns
// ErrInvalidShare when X is not a canonical encoding or the result is the
// neutral element.
func ScalarMultVfy(y *ristretto255.Scalar, x []byte) ([]byte, error) {
	p, err := ristretto255.NewElement().SetCanonicalBytes(x)
	if err != nil {
		return nil, ErrInvalidShare
	}
	k := ristretto255.NewElement().ScalarMult(y, p)
	if k.Equal(ristretto255.NewIdentityElement()) == 1 {
		return nil, ErrInvalidShare
	}
	return k.Bytes(), nil
}

// TranscriptIR returns transcript_ir(Ya,ADa,Yb,ADb).
func TranscriptIR(ya, ada, yb, adb []byte) []byte {
	return append(lvCat(ya, ada), lvCat(yb, adb)...)
}

// deriveISK returns H.hash(lv_cat(DSI||"_ISK", sid, K) || transcript).
func deriveISK(sid, k, transcript []byte) []byte {
	h := sha512.New()
	h.Write(lvCat([]byte(DSI+"_ISK"), sid, k))
	h.Write(transcript)
	return h.Sum(nil)
}

// Params are the inputs both parties must share.
type Params struct {
	// PRS is the password-related string.
	PRS []byte
	// CI is the channel identifier; it is never sent.
	CI []byte
	// SID is the session identifier.
	SID []byte
}

// Initiator is party A's state between sending Ya and receiving Yb. It is
// single use.
type Initiator struct {
	params Params
	y      *ristretto255.Scalar
	share  []byte
	ad     []byte
	used   bool
}

// Start begins a run as the initiator with associated data ada. It returns
// the state and the share Ya to send.
func Start(rand io.Reader, p Params, ada []byte) (*Initiator, []byte, error) {
	y, err := SampleScalar(rand)
	if err != nil {
		return nil, nil, err
	}
	a := startWithScalar(p, y, ada)
	return a, a.Share(), nil
}

func startWithScalar(p Params, y *ristretto255.Scalar, ada []byte) *Initiator {
	share := ScalarMult(y, Generator(p.PRS, p.CI, p.SID))
	return &Initiator{params: p, y: y, share: share, ad: append([]byte(nil), ada...)}
}

// Share returns the initiator's public share Ya.
func (a *Initiator) Share() []byte { return append([]byte(nil), a.share...) }

// Finish consumes the responder's share Yb with associated data adb and
// returns ISK. The state cannot be used again, whether Finish succeeds or not.
func (a *Initiator) Finish(yb, adb []byte) ([]byte, error) {
	if a.used {
		return nil, ErrUsed
	}
	a.used = true
	y := a.y
	a.y = nil
	k, err := ScalarMultVfy(y, yb)
	y.Zero()
	if err != nil {
		return nil, err
	}
	return deriveISK(a.params.SID, k, TranscriptIR(a.share, a.ad, yb, adb)), nil
}

// Respond runs party B's side in one step: it checks the initiator's share
// ya (sent with associated data ada), and returns its own share Yb and ISK.
func Respond(rand io.Reader, p Params, ya, ada, adb []byte) (yb, isk []byte, err error) {
	y, err := SampleScalar(rand)
	if err != nil {
		return nil, nil, err
	}
	return respondWithScalar(p, y, ya, ada, adb)
}

func respondWithScalar(p Params, y *ristretto255.Scalar, ya, ada, adb []byte) (yb, isk []byte, err error) {
	defer y.Zero()
	k, err := ScalarMultVfy(y, ya)
	if err != nil {
		return nil, nil, err
	}
	yb = ScalarMult(y, Generator(p.PRS, p.CI, p.SID))
	return yb, deriveISK(p.SID, k, TranscriptIR(ya, ada, yb, adb)), nil
}
