//go:build js

package client

import (
	"net/http"

	"github.com/coder/websocket"
)

// dialOptions: in the browser the WebSocket is the browser's own; there is no HTTP client to set.
func dialOptions(*http.Client) *websocket.DialOptions { return &websocket.DialOptions{} }
