package wire

import (
	"strings"
	"testing"
)

// The hello's time_ms is additive: a hello without it (an older gateway) still decodes strictly, and one with
// it decodes to the gateway's clock in unix milliseconds.
func TestHelloTimeIsOptionalAndDecodesStrictly(t *testing.T) {
	const base = `{"nonce":"AQ==","gateway":"12D3KooWx","gateway_id":"AA==","addrs":[],"version":1,"limits":{}`
	var old Hello
	if err := StrictUnmarshal([]byte(base+`}`), &old); err != nil {
		t.Fatalf("hello without time_ms: %v", err)
	}
	if old.TimeMS != 0 {
		t.Fatalf("hello without time_ms decodes to TimeMS %d, want 0", old.TimeMS)
	}
	var h Hello
	if err := StrictUnmarshal([]byte(base+`,"time_ms":1795625347123}`), &h); err != nil {
		t.Fatalf("hello with time_ms: %v", err)
	}
	if h.TimeMS != 1795625347123 {
		t.Fatalf("TimeMS = %d, want 1795625347123", h.TimeMS)
	}
	for name, body := range map[string]string{
		"fractional": base + `,"time_ms":1.5}`,
		"string":     base + `,"time_ms":"1795625347123"}`,
	} {
		var bad Hello
		if err := StrictUnmarshal([]byte(body), &bad); err == nil {
			t.Errorf("%s: accepted (TimeMS %d)", name, bad.TimeMS)
		}
	}
	b, err := EncodePush(PushHello, Hello{Nonce: []byte{1}, Version: Version, TimeMS: 42})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"time_ms":42`) {
		t.Fatalf("encoded hello %s has no time_ms", b)
	}
}
