// Package relay delivers envelopes across the grid: it finds the gateway a device is connected to by its
// device-signed presence record and carries the envelope there over the /gridchat/deliver/1.0.0 stream
// protocol, or hands it to the device's mailbox when the device is offline. It also keeps the presence records:
// their DHT namespace, validator and selector, the gossipsub topic that spreads them, and a bounded cache.
//
// The formats are specified in docs/PROTOCOL.md §5.
package relay
