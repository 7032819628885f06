package gateway

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/gateway/gatewaytest"
)

// The hello tells the gateway's own clock (HubConfig.Now) in unix milliseconds, so that a client whose clock
// is off can correct the times it signs.
func TestHelloCarriesTheGatewayClock(t *testing.T) {
	at := time.Date(2031, 3, 4, 5, 6, 7, 891_000_000, time.UTC)
	h, err := NewHub(HubConfig{Gateway: "12D3KooWtestgateway", GatewayID: []byte("\x00\x24test-gateway-id"),
		Directory: &memDirectory{devices: make(map[e2ee.DeviceID]DeviceKey)}, Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET "+WSPath, h)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer h.Close()
	c, err := gatewaytest.Dial(ctxT(t), gatewaytest.WSURL(srv.URL), gatewaytest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.Hello().TimeMS; got != at.UnixMilli() {
		t.Fatalf("hello time_ms = %d, want the gateway clock's %d", got, at.UnixMilli())
	}
}
