package mailbox

import "time"

// Limits are the mailbox's numbers, all configurable; DefaultLimits gives the defaults documented in
// docs/PROTOCOL.md §8.
type Limits struct {
	// Replicas is R, the number of nodes that keep each mailbox.
	Replicas int
	// WriteQuorum is how many distinct replicas must have written an envelope before Put reports it stored.
	WriteQuorum int
	// TTL is how long an envelope waits; older ones expire, leaving a tombstone.
	TTL time.Duration
	// MaxCount is the most envelopes one mailbox keeps; a put past it expires the oldest, leaving a tombstone.
	MaxCount int
	// MaxPerSender is the most envelopes one sender device may have waiting in one mailbox; more are refused.
	MaxPerSender int
	// MaxMailboxBytes is the most ciphertext bytes one mailbox keeps; more are refused.
	MaxMailboxBytes int64
	// MaxEnvelopeBytes caps one envelope's ciphertext.
	MaxEnvelopeBytes int
	// MaxTombstones is the most tombstones one mailbox keeps (the oldest go first).
	MaxTombstones int
	// MaxClockSkew is how far in the future an envelope's stamp may be, and how far a signed request's time may
	// differ from the replica's clock.
	MaxClockSkew time.Duration
	// ReplayCacheSize bounds the signed-request nonces a replica remembers; when it is full of unexpired
	// nonces, new signed requests are refused as busy rather than risking a replay.
	ReplayCacheSize int
	// DeleteMarkTTL is how long a replica remembers that an envelope was deleted, so that anti-entropy does not
	// bring it back. It must be at least TTL (default TTL plus a day).
	DeleteMarkTTL time.Duration
	// RequestTimeout bounds one request to one replica (put, delete, fetch, ack); one anti-entropy exchange,
	// several round trips, gets three times as long on both sides.
	RequestTimeout time.Duration
	// HandshakeTimeout bounds the first frame of an incoming stream.
	HandshakeTimeout time.Duration
	// RepairInterval is the period of the anti-entropy and repair round.
	RepairInterval time.Duration
	// ExpiryInterval is the period of the TTL sweep.
	ExpiryInterval time.Duration
	// SubscriberQueue is the number of new envelopes queued for one open fetch stream; a gateway that falls
	// further behind is cut off (counted) and must fetch again.
	SubscriberQueue int
	// MaxSessions bounds the fetch streams one replica serves at once.
	MaxSessions int
}

// DefaultLimits returns the default limits.
func DefaultLimits() Limits {
	return Limits{
		Replicas:         3,
		WriteQuorum:      2,
		TTL:              30 * 24 * time.Hour,
		MaxCount:         10_000,
		MaxPerSender:     2_000,
		MaxMailboxBytes:  256 << 20,
		MaxEnvelopeBytes: 64 << 10,
		MaxTombstones:    10_000,
		MaxClockSkew:     5 * time.Minute,
		ReplayCacheSize:  100_000,
		DeleteMarkTTL:    31 * 24 * time.Hour,
		RequestTimeout:   10 * time.Second,
		HandshakeTimeout: 10 * time.Second,
		RepairInterval:   time.Minute,
		ExpiryInterval:   10 * time.Minute,
		SubscriberQueue:  1024,
		MaxSessions:      4096,
	}
}

// withDefaults fills zero fields from DefaultLimits.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	set := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	setD := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&l.Replicas, d.Replicas)
	set(&l.WriteQuorum, d.WriteQuorum)
	set(&l.MaxCount, d.MaxCount)
	set(&l.MaxPerSender, d.MaxPerSender)
	set(&l.MaxEnvelopeBytes, d.MaxEnvelopeBytes)
	set(&l.MaxTombstones, d.MaxTombstones)
	set(&l.ReplayCacheSize, d.ReplayCacheSize)
	set(&l.SubscriberQueue, d.SubscriberQueue)
	set(&l.MaxSessions, d.MaxSessions)
	if l.MaxMailboxBytes <= 0 {
		l.MaxMailboxBytes = d.MaxMailboxBytes
	}
	setD(&l.TTL, d.TTL)
	setD(&l.MaxClockSkew, d.MaxClockSkew)
	setD(&l.RequestTimeout, d.RequestTimeout)
	setD(&l.HandshakeTimeout, d.HandshakeTimeout)
	setD(&l.RepairInterval, d.RepairInterval)
	setD(&l.ExpiryInterval, d.ExpiryInterval)
	if l.DeleteMarkTTL < l.TTL {
		l.DeleteMarkTTL = l.TTL + 24*time.Hour
	}
	if l.WriteQuorum > l.Replicas {
		l.WriteQuorum = l.Replicas
	}
	return l
}
