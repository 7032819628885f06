package backup

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata vectors and fuzz seeds")

type vectors struct {
	Note        string `json:"note"`
	Passphrase  string `json:"passphrase"`
	RecoveryKey string `json:"recovery_key"`
	Payload     string `json:"payload"`
	Archive     string `json:"archive"`
	ManifestKey string `json:"manifest_public_key"`
	Manifest    string `json:"signed_manifest"`
}

const vectorNote = "Archive: WriterOptions{Rand: SHA-256 counter stream of seed \"vector-archive\", ChunkSize: 64, " +
	"RecoveryKey from seed \"vector-rk\"}, default Argon2id params. Manifest: Ed25519 seed SHA-256(\"device\"), " +
	"testManifest(42)."

func makeVectors(t *testing.T) vectors {
	kdf := &memoKDF{}
	rk, _ := NewRecoveryKey(newDetRand("vector-rk"))
	p := []byte("gridchat backup test vector: three chunks of history, the last one short............!")
	a := archive(t, kdf, p, WriterOptions{Rand: newDetRand("vector-archive"), ChunkSize: 64, RecoveryKey: rk})
	pub, priv := testKey("device")
	m, err := SignManifest(priv, testManifest(42))
	if err != nil {
		t.Fatal(err)
	}
	return vectors{
		Note: vectorNote, Passphrase: string(pass), RecoveryKey: rk.String(),
		Payload: hex.EncodeToString(p), Archive: hex.EncodeToString(a),
		ManifestKey: hex.EncodeToString(pub), Manifest: hex.EncodeToString(m),
	}
}

// TestKnownAnswerVectors pins the archive and manifest formats byte for
// byte, and opens the committed archive with both its passphrase and its
// recovery key, so an accidental format change fails here. Run with
// -update after a deliberate change.
func TestKnownAnswerVectors(t *testing.T) {
	got := makeVectors(t)
	path := filepath.Join("testdata", "vectors.json")
	if *update {
		b, _ := json.MarshalIndent(got, "", "  ")
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		writeSeeds(t, got)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var want vectors
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("vectors changed:\n got %+v\nwant %+v", got, want)
	}
	a, _ := hex.DecodeString(want.Archive)
	payload, _ := hex.DecodeString(want.Payload)
	r, err := NewReader(bytes.NewReader(a), []byte(want.Passphrase))
	if err != nil {
		t.Fatal(err)
	}
	if p, err := io.ReadAll(r); err != nil || !bytes.Equal(p, payload) {
		t.Fatalf("committed archive with passphrase: %v", err)
	}
	rk, err := ParseRecoveryKey(want.RecoveryKey)
	if err != nil {
		t.Fatal(err)
	}
	rr, err := NewRecoveryReader(bytes.NewReader(a), rk)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := io.ReadAll(rr); err != nil || !bytes.Equal(p, payload) {
		t.Fatalf("committed archive with recovery key: %v", err)
	}
	pub, _ := hex.DecodeString(want.ManifestKey)
	m, _ := hex.DecodeString(want.Manifest)
	if got, err := VerifyManifest(pub, m); err != nil || got.Sequence != 42 {
		t.Fatalf("committed manifest: %v %+v", err, got)
	}
}

func writeSeeds(t *testing.T, v vectors) {
	a, _ := hex.DecodeString(v.Archive)
	m, _ := hex.DecodeString(v.Manifest)
	hl := headerLen(a)
	seeds := map[string][]string{
		"FuzzReadHeader":       {fmt.Sprintf("[]byte(%q)", a[:hl]), fmt.Sprintf("[]byte(%q)", a)},
		"FuzzReadChunks":       {fmt.Sprintf("[]byte(%q)", a[hl:])},
		"FuzzVerifyManifest":   {fmt.Sprintf("[]byte(%q)", m)},
		"FuzzParseRecoveryKey": {fmt.Sprintf("string(%q)", v.RecoveryKey)},
	}
	for name, list := range seeds {
		dir := filepath.Join("testdata", "fuzz", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, s := range list {
			body := "go test fuzz v1\n" + s + "\n"
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
