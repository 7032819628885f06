package e2ee

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// fuzzTargets maps each fuzz target to the vector that seeds it.
var fuzzTargets = map[string]string{
	"FuzzDecodeDevicePublic":       "alice_device_public",
	"FuzzDecodeDeviceKeys":         "alice_device_keys",
	"FuzzDecodeSignedMessagingKey": "alice_messaging_key",
	"FuzzOpenPrivate":              "sealed_private",
	"FuzzDecodeChain":              "chain",
	"FuzzDecodeStatement":          "chain",
	"FuzzDecodeDeviceCert":         "chain",
	"FuzzDecodeRegistrationProof":  "registration_proof",
	"FuzzDecodeAuthProof":          "auth_proof",
	"FuzzDecodeSignedRequest":      "signed_request",
	"FuzzDecodeKeyDistribution":    "key_distribution",
	"FuzzDecodeMessage":            "message",
	"FuzzDecodeSession":            "session_state",
	"FuzzDecodeReceiver":           "receiver_state",
	"FuzzDecodeSender":             "sender_state",
	"FuzzAnswerKeyChallenge":       "key_challenge",
}

// fuzzSeeds returns the committed seeds of a target: its vector, plus for the statement and certificate
// targets the statements and certificates inside the vector chain.
func fuzzSeeds(tb testing.TB, target string) [][]byte {
	v := readVectors(tb)
	raw := unhex(tb, v, fuzzTargets[target])
	switch target {
	case "FuzzDecodeStatement", "FuzzDecodeDeviceCert":
		c, err := DecodeChain(raw)
		if err != nil {
			tb.Fatal(err)
		}
		var out [][]byte
		for _, s := range c.stmts {
			if target == "FuzzDecodeStatement" {
				out = append(out, s.Encode())
			} else if ad, ok := s.Body.(*AddDevice); ok {
				out = append(out, ad.Cert.Encode())
			}
		}
		return out
	}
	return [][]byte{raw}
}

// writeFuzzSeeds writes the seed corpus files under testdata/fuzz (run by the -update path).
func writeFuzzSeeds(t *testing.T) {
	for target := range fuzzTargets {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, seed := range fuzzSeeds(t, target) {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", seed)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("vector-%d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// fuzzCanonical fuzzes a decoder: it must never panic, must refuse with a typed error, and whatever it accepts
// must re-encode to exactly the input (one encoding per value).
func fuzzCanonical(f *testing.F, target string, decode func([]byte) ([]byte, error)) {
	for _, s := range fuzzSeeds(f, target) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		enc, err := decode(data)
		if err != nil {
			if !isTyped(err) {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		if enc != nil && !bytes.Equal(enc, data) {
			t.Fatalf("accepted a non-canonical encoding:\n in  %x\n out %x", data, enc)
		}
	})
}

func FuzzDecodeDevicePublic(f *testing.F) {
	fuzzCanonical(f, "FuzzDecodeDevicePublic", func(b []byte) ([]byte, error) {
		p, err := DecodeDevicePublic(b)
		if err != nil {
			return nil, err
		}
		return p.Encode(), nil
	})
}

func FuzzDecodeDeviceKeys(f *testing.F) {
	fuzzCanonical(f, "FuzzDecodeDeviceKeys", func(b []byte) ([]byte, error) {
		k, err := DecodeDeviceKeys(b)
		if err != nil {
			return nil, err
		}
		return k.Encode(), nil
	})
}

func FuzzDecodeSignedMessagingKey(f *testing.F) {
	fuzzCanonical(f, "FuzzDecodeSignedMessagingKey", func(b []byte) ([]byte, error) {
		k, err := DecodeSignedMessagingKey(b)
		if err != nil {
			return nil, err
		}
		return k.Encode(), nil
	})
}

func FuzzOpenPrivate(f *testing.F) {
	key := unhex(f, readVectors(f), "seal_key")
	fuzzCanonical(f, "FuzzOpenPrivate", func(b []byte) ([]byte, error) {
		_, err := OpenPrivate(key, b)
		return nil, err
	})
}

func FuzzDecodeChain(f *testing.F) {
	fuzzCanonical(f, "FuzzDecodeChain", func(b []byte) ([]byte, error) {
		c, err := DecodeChain(b)
		if err != nil {
			return nil, err
		}
		if _, err := Replay(c); err != nil && !isTyped(err) {
			return nil, fmt.Errorf("replay: untyped %v", err)
		}
		return c.Encode(), nil
	})
}

func FuzzDecodeStatement(f *testing.F) {
	fuzzCanonical(f, "FuzzDecodeStatement", func(b []byte) ([]byte, error) {
		s, err := DecodeStatement(b)
		if err != nil {
			return nil, err
		}
		return s.Encode(), nil
	})
}

func FuzzDecodeDeviceCert(f *testing.F) {
	fuzzCanonical(f, "FuzzDecodeDeviceCert", func(b []byte) ([]byte, error) {
		c, err := DecodeDeviceCert(b)
		if err != nil {
			return nil, err
		}
		return c.Encode(), nil
	})
}

func FuzzDecodeRegistrationProof(f *testing.F) {
	fuzzCanonical(f, "FuzzDecodeRegistrationProof", func(b []byte) ([]byte, error) {
		p, err := DecodeRegistrationProof(b)
		if err != nil {
			return nil, err
		}
		return p.Encode(), nil
	})
}

func FuzzDecodeAuthProof(f *testing.F) {
	fuzzCanonical(f, "FuzzDecodeAuthProof", func(b []byte) ([]byte, error) {
		p, err := DecodeAuthProof(b)
		if err != nil {
			return nil, err
		}
		return p.Encode(), nil
	})
}

func FuzzDecodeSignedRequest(f *testing.F) {
	fuzzCanonical(f, "FuzzDecodeSignedRequest", func(b []byte) ([]byte, error) {
		q, err := DecodeSignedRequest(b)
		if err != nil {
			return nil, err
		}
		return q.Encode(), nil
	})
}

func FuzzDecodeKeyDistribution(f *testing.F) {
	v := readVectors(f)
	alice, err := DecodeDevicePublic(unhex(f, v, "alice_device_public"))
	if err != nil {
		f.Fatal(err)
	}
	bob, err := DecodeDeviceKeys(unhex(f, v, "bob_device_keys"))
	if err != nil {
		f.Fatal(err)
	}
	fuzzCanonical(f, "FuzzDecodeKeyDistribution", func(b []byte) ([]byte, error) {
		kd, err := DecodeKeyDistribution(b)
		if err != nil {
			return nil, err
		}
		if _, err := Open(kd, alice, bob); err != nil && !isTyped(err) {
			return nil, fmt.Errorf("open: untyped %v", err)
		}
		return kd.Encode(), nil
	})
}

func FuzzDecodeMessage(f *testing.F) {
	v := readVectors(f)
	state := unhex(f, v, "receiver_state")
	fuzzCanonical(f, "FuzzDecodeMessage", func(b []byte) ([]byte, error) {
		m, err := DecodeMessage(b)
		if err != nil {
			return nil, err
		}
		r, err := DecodeReceiver(state)
		if err != nil {
			return nil, fmt.Errorf("receiver vector: %v", err)
		}
		if _, err := r.Open(m); err != nil && !isTyped(err) {
			return nil, fmt.Errorf("open: untyped %v", err)
		}
		return m.Encode(), nil
	})
}

func FuzzDecodeSession(f *testing.F) {
	fuzzCanonical(f, "FuzzDecodeSession", func(b []byte) ([]byte, error) {
		s, err := DecodeSession(b)
		if err != nil {
			return nil, err
		}
		return s.Encode()
	})
}

func FuzzDecodeReceiver(f *testing.F) {
	fuzzCanonical(f, "FuzzDecodeReceiver", func(b []byte) ([]byte, error) {
		r, err := DecodeReceiver(b)
		if err != nil {
			return nil, err
		}
		return r.Encode(), nil
	})
}

func FuzzDecodeSender(f *testing.F) {
	alice, err := DecodeDeviceKeys(unhex(f, readVectors(f), "alice_device_keys"))
	if err != nil {
		f.Fatal(err)
	}
	fuzzCanonical(f, "FuzzDecodeSender", func(b []byte) ([]byte, error) {
		s, err := DecodeSender(b, alice)
		if err != nil {
			return nil, err
		}
		return s.Encode(), nil
	})
}

func FuzzAnswerKeyChallenge(f *testing.F) {
	v := readVectors(f)
	alice, err := DecodeDeviceKeys(unhex(f, v, "alice_device_keys"))
	if err != nil {
		f.Fatal(err)
	}
	gateway, nonce := unhex(f, v, "gateway"), unhex(f, v, "nonce")
	fuzzCanonical(f, "FuzzAnswerKeyChallenge", func(b []byte) ([]byte, error) {
		_, err := alice.AnswerKeyChallenge(gateway, nonce, b)
		return nil, err
	})
}

func TestFuzzSeedsCommitted(t *testing.T) {
	for target := range fuzzTargets {
		for i, seed := range fuzzSeeds(t, target) {
			got, err := os.ReadFile(filepath.Join("testdata", "fuzz", target, fmt.Sprintf("vector-%d", i)))
			if err != nil {
				t.Fatalf("%s: %v (run the vector test with -update)", target, err)
			}
			if want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", seed); string(got) != want {
				t.Fatalf("%s seed %d differs from the vectors (%s)", target, i, hex.EncodeToString(seed[:8]))
			}
		}
	}
}
