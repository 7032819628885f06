package gateway

import (
	"time"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/wire"
)

// WSLimits bounds the WebSocket API. DefaultWSLimits gives the documented defaults (docs/PROTOCOL.md §8); zero
// fields of a WSLimits passed to NewHub take them.
type WSLimits struct {
	// MaxFrameBytes caps one frame from an authenticated client; larger frames close the connection (1009).
	MaxFrameBytes int64
	// MaxPreAuthFrameBytes caps one frame before authentication.
	MaxPreAuthFrameBytes int64
	// HandshakeTimeout closes a connection that has not authenticated in time (4001).
	HandshakeTimeout time.Duration
	// PingInterval is how often the gateway pings an idle client.
	PingInterval time.Duration
	// IdleTimeout closes a connection from which nothing (frame or pong) arrived for this long (4005).
	IdleTimeout time.Duration
	// WriteTimeout bounds writing one frame to the client.
	WriteTimeout time.Duration
	// SendQueue is how many frames may wait for one slow client; one more closes it as a slow consumer (4004).
	SendQueue int
	// MaxInFlight is how many requests of one connection may await their response (send waits for acks).
	MaxInFlight int
	// RequestsPerSecond and RequestBurst limit the frames of one connection.
	RequestsPerSecond float64
	RequestBurst      int
	// AccountRequestsPerSecond and AccountRequestBurst limit the frames of all connections of one account.
	AccountRequestsPerSecond float64
	AccountRequestBurst      int
	// MaxRateViolations is how many refused frames in a row close the connection (4003).
	MaxRateViolations int
	// MaxConnsPerDevice caps the connections of one device to this node.
	MaxConnsPerDevice int
	// MaxConns caps all WebSocket connections to this node.
	MaxConns int
	// AckTimeout bounds how long a pushed envelope waits for the device's acknowledgement.
	AckTimeout time.Duration
	// DedupeWindow is how many recent (sender, message ID) pairs are remembered per device to drop duplicates.
	DedupeWindow int
	// MaxPendingPerDevice caps envelopes pushed to one device and not yet acknowledged.
	MaxPendingPerDevice int
	// ClockSkew is the tolerance for the auth proof's time.
	ClockSkew time.Duration
	// PresenceTTL is the longest a presence record may live after signing.
	PresenceTTL time.Duration
}

// DefaultWSLimits returns the default WebSocket limits.
func DefaultWSLimits() WSLimits {
	return WSLimits{
		MaxFrameBytes:            256 << 10,
		MaxPreAuthFrameBytes:     16 << 10,
		HandshakeTimeout:         10 * time.Second,
		PingInterval:             20 * time.Second,
		IdleTimeout:              60 * time.Second,
		WriteTimeout:             10 * time.Second,
		SendQueue:                1024,
		MaxInFlight:              256,
		RequestsPerSecond:        500,
		RequestBurst:             1000,
		AccountRequestsPerSecond: 1000,
		AccountRequestBurst:      2000,
		MaxRateViolations:        50,
		MaxConnsPerDevice:        8,
		MaxConns:                 10000,
		AckTimeout:               10 * time.Second,
		DedupeWindow:             4096,
		MaxPendingPerDevice:      1024,
		ClockSkew:                e2ee.ClockSkew,
		PresenceTTL:              wire.DefaultPresenceTTL,
	}
}

func (l *WSLimits) fill() {
	d := DefaultWSLimits()
	setI64 := func(v *int64, def int64) {
		if *v <= 0 {
			*v = def
		}
	}
	setI := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	setD := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	setF := func(v *float64, def float64) {
		if *v <= 0 {
			*v = def
		}
	}
	setI64(&l.MaxFrameBytes, d.MaxFrameBytes)
	setI64(&l.MaxPreAuthFrameBytes, d.MaxPreAuthFrameBytes)
	setD(&l.HandshakeTimeout, d.HandshakeTimeout)
	setD(&l.PingInterval, d.PingInterval)
	setD(&l.IdleTimeout, d.IdleTimeout)
	setD(&l.WriteTimeout, d.WriteTimeout)
	setI(&l.SendQueue, d.SendQueue)
	setI(&l.MaxInFlight, d.MaxInFlight)
	setF(&l.RequestsPerSecond, d.RequestsPerSecond)
	setI(&l.RequestBurst, d.RequestBurst)
	setF(&l.AccountRequestsPerSecond, d.AccountRequestsPerSecond)
	setI(&l.AccountRequestBurst, d.AccountRequestBurst)
	setI(&l.MaxRateViolations, d.MaxRateViolations)
	setI(&l.MaxConnsPerDevice, d.MaxConnsPerDevice)
	setI(&l.MaxConns, d.MaxConns)
	setD(&l.AckTimeout, d.AckTimeout)
	setI(&l.DedupeWindow, d.DedupeWindow)
	setI(&l.MaxPendingPerDevice, d.MaxPendingPerDevice)
	setD(&l.ClockSkew, d.ClockSkew)
	setD(&l.PresenceTTL, d.PresenceTTL)
}

// WebSocket close codes the gateway uses besides the standard 1000 (normal), 1001 (node shutting down) and 1009
// (frame over the size limit).
const (
	CloseHandshakeTimeout = 4001 // no successful auth within HandshakeTimeout
	CloseAuthFailed       = 4002 // auth refused: bad proof, bad or replayed nonce, unknown or revoked device
	CloseRateLimited      = 4003 // MaxRateViolations refused frames in a row
	CloseSlowConsumer     = 4004 // the send queue overflowed
	CloseIdleTimeout      = 4005 // nothing received for IdleTimeout
	ClosePolicy           = 4006 // reserved, not sent by this version (binary frames get malformed, too many connections busy or HTTP 503)
)
