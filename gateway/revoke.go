package gateway

import (
	"github.com/coder/websocket"

	"github.com/iagon/gridchat/wire"
)

// CloseRevoked is the WebSocket close code of a connection whose device was revoked while it was connected.
const CloseRevoked websocket.StatusCode = 4007

// Disconnect closes every connection of device with CloseRevoked and reason, and returns how many it closed. The
// node calls it when the key directory learns the device was revoked; the device cannot authenticate again.
func (h *Hub) Disconnect(device wire.DeviceID, reason string) int {
	h.mu.Lock()
	var conns []*conn
	if ds := h.devices[device]; ds != nil {
		conns = append(conns, ds.conns...)
	}
	h.mu.Unlock()
	for _, c := range conns {
		c.close(CloseRevoked, reason, "revoked")
	}
	return len(conns)
}
