// Package client is the gridchat Go SDK: one device of a gridchat account. It keeps the device's keys,
// sessions, contacts and conversations in an encrypted local store (package client/store), stays connected to
// any gateway of the grid (reconnecting with backoff, resuming from its mailbox), and does all the
// cryptography itself through package e2ee: nodes only ever carry ciphertext.
//
// A first device calls Register; a further device of the same account joins with Link (the old device runs
// InviteDevice and HostLink, then SendHistory); a lost device comes back with Restore from a Backup. Open
// reopens a device's state.
//
//	c, err := client.Register(ctx, client.Config{Dir: dir, StoreKey: key, Gateways: []string{url}}, "alice")
//	conv, err := c.StartDirect(ctx, "bob")
//	_, err = c.SendText(ctx, conv.ID, "hello")
//	for ev := range c.Events() { ... }
//
// Conversations are 1:1 (StartDirect), groups with admin-signed membership (CreateGroup, AddMember,
// RemoveMember, SetAdmin), and the account's own devices. Every device sends in sessions it distributes
// itself to every current device of every member, after replaying their sigchains from the directory; a
// session renews after a number of messages, an age, or any change of the member devices. Each device numbers
// what it sends per conversation inside the ciphertext, so receivers detect gaps (GapEvent), ask the sender to
// resend from its bounded store of recent messages, and never show a message twice. Each message also carries
// a causal counter, so every device lists a conversation in one order in which a reply follows what it
// answers, whatever the devices' clocks (Messages, CompareMessages). "Stored" delivery statuses are believed
// only with a quorum of verified mailbox replica receipts. Safety numbers (SafetyNumber) are computed from
// every member's device keys and a change is reported (SafetyNumberEvent).
//
// The package builds for GOOS=js GOARCH=wasm: it depends on e2ee, wire, the mailbox receipt format and
// github.com/coder/websocket only. The client's formats and behaviour are specified in docs/PROTOCOL.md §9.
package client
