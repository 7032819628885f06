package witness

import (
	"bytes"
	"testing"
)

func FuzzParseRequest(f *testing.F) {
	f.Add([]byte("old 0\n\ngridchat.grid/log/x\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— gridchat.grid/log/x AAAAAA==\n"))
	f.Add([]byte("old 3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\nx\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseRequest(b)
		if err != nil {
			return
		}
		r2, err := parseRequest(r.marshal())
		if err != nil || !bytes.Equal(r2.marshal(), r.marshal()) {
			t.Fatalf("re-encoding is not stable: %v", err)
		}
	})
}

func FuzzParseResponse(f *testing.F) {
	f.Add([]byte("200\n— gridchat.grid/witness/x AAAA\n"))
	f.Add([]byte("409\n12\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseResponse(b)
		if err != nil {
			return
		}
		if !bytes.Equal(r.marshal(), b) {
			t.Fatalf("response %q re-encodes as %q", b, r.marshal())
		}
	})
}

func TestParseRequestIsStrict(t *testing.T) {
	for name, s := range map[string]string{
		"no old":        "\n\nx\n",
		"leading zero":  "old 01\n\nx\n",
		"short hash":    "old 1\nAAAA\n\nx\n",
		"no checkpoint": "old 1\n\n",
		"truncated":     "old 1\n",
	} {
		if _, err := parseRequest([]byte(s)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
