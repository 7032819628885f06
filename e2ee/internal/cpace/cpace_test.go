package cpace

import (
	"bytes"
	"crypto/rand"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/gtank/ristretto255"
)

type hexBytes []byte

func (h *hexBytes) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := hex.DecodeString(s)
	*h = v
	return err
}

type draftVectors struct {
	PRS             hexBytes `json:"PRS"`
	CI              hexBytes `json:"CI"`
	SID             hexBytes `json:"sid"`
	GeneratorString hexBytes `json:"generator_string"`
	GeneratorHash   hexBytes `json:"generator_hash"`
	G               hexBytes `json:"g"`
	YaScalar        hexBytes `json:"ya"`
	ADa             hexBytes `json:"ADa"`
	Ya              hexBytes `json:"Ya"`
	YbScalar        hexBytes `json:"yb"`
	ADb             hexBytes `json:"ADb"`
	Yb              hexBytes `json:"Yb"`
	K               hexBytes `json:"K"`
	TranscriptIR    hexBytes `json:"transcript_ir"`
	ISKInputIR      hexBytes `json:"ISK_input_ir"`
	ISKIR           hexBytes `json:"ISK_IR"`
	ScalarMultValid struct {
		S      hexBytes `json:"s"`
		X      hexBytes `json:"X"`
		Result hexBytes `json:"result"`
	} `json:"scalar_mult_valid"`
	ScalarMultVfyInvalid []hexBytes `json:"scalar_mult_vfy_invalid"`
	PrependLen           []struct {
		In  hexBytes `json:"in"`
		Out hexBytes `json:"out"`
	} `json:"prepend_len"`
	LVCat struct {
		In  []hexBytes `json:"in"`
		Out hexBytes   `json:"out"`
	} `json:"lv_cat"`
	TranscriptStrings struct {
		Ya, ADa, Yb, ADb, Out hexBytes
	} `json:"transcript_ir_strings"`
}

func loadVectors(t *testing.T) draftVectors {
	t.Helper()
	b, err := os.ReadFile("testdata/ristretto255_sha512.json")
	if err != nil {
		t.Fatal(err)
	}
	var v draftVectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func scalar(t *testing.T, b []byte) *ristretto255.Scalar {
	t.Helper()
	s, err := ristretto255.NewScalar().SetCanonicalBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func eq(t *testing.T, name string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Errorf("%s:\n got %x\nwant %x", name, got, want)
	}
}

func TestStringUtilitiesMatchDraftVectors(t *testing.T) {
	v := loadVectors(t)
	for _, c := range v.PrependLen {
		eq(t, "prepend_len", prependLen(c.In), c.Out)
	}
	var in [][]byte
	for _, a := range v.LVCat.In {
		in = append(in, a)
	}
	eq(t, "lv_cat", lvCat(in...), v.LVCat.Out)
	ts := v.TranscriptStrings
	eq(t, "transcript_ir", TranscriptIR(ts.Ya, ts.ADa, ts.Yb, ts.ADb), ts.Out)
	// LEB128 of 127 and 128, as in the draft's prepend_len vectors.
	eq(t, "prepend_len(127 bytes) prefix", prependLen(make([]byte, 127))[:1], []byte{0x7f})
	eq(t, "prepend_len(128 bytes) prefix", prependLen(make([]byte, 128))[:2], []byte{0x80, 0x01})
}

func TestGeneratorMatchesDraftVector(t *testing.T) {
	v := loadVectors(t)
	gs := generatorString(v.PRS, v.CI, v.SID)
	eq(t, "generator_string", gs, v.GeneratorString)
	h := sha512.Sum512(gs)
	eq(t, "generator hash", h[:], v.GeneratorHash)
	eq(t, "g", Generator(v.PRS, v.CI, v.SID).Bytes(), v.G)
}

func TestSharesSecretPointAndISKMatchDraftVectors(t *testing.T) {
	v := loadVectors(t)
	p := Params{PRS: v.PRS, CI: v.CI, SID: v.SID}
	a := startWithScalar(p, scalar(t, v.YaScalar), v.ADa)
	eq(t, "Ya", a.Share(), v.Ya)

	g := Generator(v.PRS, v.CI, v.SID)
	eq(t, "Yb", ScalarMult(scalar(t, v.YbScalar), g), v.Yb)

	k1, err := ScalarMultVfy(scalar(t, v.YaScalar), v.Yb)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := ScalarMultVfy(scalar(t, v.YbScalar), v.Ya)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "K (A)", k1, v.K)
	eq(t, "K (B)", k2, v.K)
	eq(t, "transcript_ir", TranscriptIR(v.Ya, v.ADa, v.Yb, v.ADb), v.TranscriptIR)
	eq(t, "ISK input", append(lvCat([]byte(DSI+"_ISK"), v.SID, v.K), v.TranscriptIR...), v.ISKInputIR)

	iskA, err := a.Finish(v.Yb, v.ADb)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "ISK_IR (initiator)", iskA, v.ISKIR)
	yb, iskB, err := respondWithScalar(p, scalar(t, v.YbScalar), v.Ya, v.ADa, v.ADb)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "Yb (responder)", yb, v.Yb)
	eq(t, "ISK_IR (responder)", iskB, v.ISKIR)
}

func TestScalarMultVfyMatchesDraftVectors(t *testing.T) {
	v := loadVectors(t)
	s := scalar(t, v.ScalarMultValid.S)
	got, err := ScalarMultVfy(s, v.ScalarMultValid.X)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "scalar_mult_vfy", got, v.ScalarMultValid.Result)
	x, err := ristretto255.NewElement().SetCanonicalBytes(v.ScalarMultValid.X)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "scalar_mult", ScalarMult(s, x), v.ScalarMultValid.Result)
	for _, bad := range v.ScalarMultVfyInvalid {
		if _, err := ScalarMultVfy(s, bad); !errors.Is(err, ErrInvalidShare) {
			t.Errorf("ScalarMultVfy(%x) error = %v, want ErrInvalidShare", []byte(bad), err)
		}
	}
}

func TestRunWithSamePasswordAgreesAndWrongPasswordDiffers(t *testing.T) {
	p := Params{PRS: []byte("correct horse"), CI: []byte("ci"), SID: []byte("sid")}
	a, ya, err := Start(rand.Reader, p, []byte("A"))
	if err != nil {
		t.Fatal(err)
	}
	yb, iskB, err := Respond(rand.Reader, p, ya, []byte("A"), []byte("B"))
	if err != nil {
		t.Fatal(err)
	}
	iskA, err := a.Finish(yb, []byte("B"))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "ISK agreement", iskA, iskB)
	if _, err := a.Finish(yb, []byte("B")); !errors.Is(err, ErrUsed) {
		t.Fatalf("second Finish error = %v, want ErrUsed", err)
	}

	wrong := p
	wrong.PRS = []byte("correct horsf")
	a2, ya2, err := Start(rand.Reader, p, []byte("A"))
	if err != nil {
		t.Fatal(err)
	}
	yb2, iskB2, err := Respond(rand.Reader, wrong, ya2, []byte("A"), []byte("B"))
	if err != nil {
		t.Fatal(err)
	}
	iskA2, err := a2.Finish(yb2, []byte("B"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(iskA2, iskB2) {
		t.Fatal("different passwords produced the same ISK")
	}
}

func TestIdentityShareAborts(t *testing.T) {
	p := Params{PRS: []byte("pw")}
	a, _, err := Start(rand.Reader, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Finish(make([]byte, 32), nil); !errors.Is(err, ErrInvalidShare) {
		t.Fatalf("Finish(identity) error = %v, want ErrInvalidShare", err)
	}
	if _, _, err := Respond(rand.Reader, p, make([]byte, 31), nil, nil); !errors.Is(err, ErrInvalidShare) {
		t.Fatalf("Respond(short) error = %v, want ErrInvalidShare", err)
	}
}
