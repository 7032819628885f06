package client

import (
	"bytes"
	"fmt"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/wire"
)

// statuses turns a send response into per-device delivery statuses, in request order.
func (c *Client) statuses(id wire.MessageID, to []e2ee.DeviceID, resp *wire.SendResponse) ([]DeliveryStatus, error) {
	if len(resp.Results) != len(to) {
		return nil, fmt.Errorf("client: send: %d results for %d recipients", len(resp.Results), len(to))
	}
	out := make([]DeliveryStatus, len(to))
	for i, r := range resp.Results {
		if !bytes.Equal(r.DeviceID, to[i][:]) {
			return nil, fmt.Errorf("client: send: result %d names another device", i)
		}
		out[i] = DeliveryStatus{Device: to[i], Status: r.Status, Reason: r.Reason}
	}
	return out, nil
}

// handleOtherPush handles pushes other than envelopes.
func (c *Client) handleOtherPush(p *wire.Push) {
	switch p.Name {
	case pushLinkFrame:
		c.deliverLinkFrame(p)
	default:
		c.log.Debug("ignoring push", "name", p.Name)
	}
}
