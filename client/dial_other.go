//go:build !js

package client

import (
	"net/http"

	"github.com/coder/websocket"
)

func dialOptions(hc *http.Client) *websocket.DialOptions {
	return &websocket.DialOptions{HTTPClient: hc}
}
