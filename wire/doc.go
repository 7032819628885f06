// Package wire defines the versioned formats shared by gridchat clients and nodes: the WebSocket frames of the
// gateway API (requests, responses, pushes), their operation bodies, the stable error codes, the envelope a
// message travels in, and the device-signed presence record.
//
// The package must stay free of libp2p and of anything that does not build for GOOS=js GOARCH=wasm, because the
// client SDK uses it. The formats are specified in docs/PROTOCOL.md §7 (frames) and §5 (presence).
package wire
