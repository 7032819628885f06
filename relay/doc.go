// Package relay delivers envelopes across the grid: it finds the gateways a device is connected to by its
// device-signed presence records (one per gateway) and carries the envelope to them, newest first, over the
// deliver stream protocol (<prefix>/deliver/1.0.0, /gridchat/deliver/1.0.0 by default), or hands it to the
// device's mailbox when the device is offline. It also keeps the presence records: their DHT namespace,
// validator and selector, the gossipsub topic that spreads them (<prefix>/presence/1), and a bounded cache
// that merges them per (device, gateway).
//
// The formats are specified in docs/PROTOCOL.md §5.
package relay
