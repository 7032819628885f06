// Package mailbox keeps envelopes for devices that are offline, replicated on the grid: a device's mailbox lives
// on the R nodes closest to SHA-256(device ID) in the DHT keyspace, every replica writes what it accepts to disk
// before it signs a receipt for it, and "stored" means receipts from a write quorum of distinct replicas.
//
// A Service is both a replica (it answers the mailbox stream protocol, <prefix>/mailbox/1.0.0 and so
// /gridchat/mailbox/1.0.0 by default, and keeps its mailboxes in a Store) and a client of the other replicas (Put for a sender's gateway, Open for the gateway a device
// connects to). Fetch and delete need a fresh request signed by the device. Envelopes expire by age and by count,
// leaving tombstones the device is told about; quotas refuse the excess. Replicas reconcile their envelope and
// delete sets (anti-entropy) and re-replicate when the set of closest nodes changes.
//
// The protocol, the key derivation and the limits are specified in docs/PROTOCOL.md §5 ("Mailboxes") and §8.
package mailbox
