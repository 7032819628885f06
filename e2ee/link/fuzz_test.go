package link

import (
	"bytes"
	"testing"
)

func FuzzParseQRPayload(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		tk, err := ParseQRPayload(b)
		if err != nil {
			if !isTyped(err) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		again := encodeQR(tk.Rendezvous, tk.Password, tk.Expires)
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs: %x vs %x", again, b)
		}
	})
}

func FuzzParseShortCode(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		tk, err := ParseShortCode(s)
		if err != nil {
			if !isTyped(err) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		back, err := ParseShortCode(encodeShortCode(tk.Rendezvous, tk.Password))
		if err != nil || !bytes.Equal(back.Password, tk.Password) || !bytes.Equal(back.Rendezvous, tk.Rendezvous) {
			t.Fatalf("canonical form does not round-trip: %v", err)
		}
	})
}

// FuzzHostFrames feeds arbitrary share and confirmation frames to a host.
func FuzzHostFrames(f *testing.F) {
	f.Fuzz(func(t *testing.T, shareA, confirmA []byte) {
		clk := &fakeClock{epoch}
		h, err := NewHost(KindShortCode, opts("fuzz/host", clk))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.Respond(shareA); err != nil {
			if !isTyped(err) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if _, err := h.Confirm(confirmA); err == nil {
			t.Fatal("host confirmed a run with a fuzzed confirmation")
		} else if !isTyped(err) {
			t.Fatalf("untyped error %v", err)
		}
	})
}

// FuzzJoinerShareB feeds arbitrary share-B frames to a joiner.
func FuzzJoinerShareB(f *testing.F) {
	f.Fuzz(func(t *testing.T, shareB []byte) {
		clk := &fakeClock{epoch}
		h, err := NewHost(KindQR, opts("fuzz/host", clk))
		if err != nil {
			t.Fatal(err)
		}
		p, _ := h.QRPayload()
		tk, err := ParseQRPayload(p)
		if err != nil {
			t.Fatal(err)
		}
		j, _, err := Join(tk, opts("fuzz/join", clk))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := j.Finish(shareB); err != nil && !isTyped(err) {
			t.Fatalf("untyped error %v", err)
		}
	})
}

func FuzzChannelOpen(f *testing.F) {
	f.Fuzz(func(t *testing.T, frame []byte) {
		r := linkRun(t, KindQR, "vectors", &fakeClock{epoch})
		if _, _, err := r.hostCh.Open(frame); err != nil && !isTyped(err) {
			t.Fatalf("untyped error %v", err)
		}
	})
}
