package link

import (
	"bytes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/iagon/gridchat/e2ee/internal/cpace"
)

// Frame constants. Every frame starts with FrameVersion and a type byte.
const (
	// FrameVersion is the version byte of every link frame.
	FrameVersion = 1

	// FrameShareA carries the joiner's CPace share Ya.
	FrameShareA byte = 1
	// FrameShareB carries the host's CPace share Yb and its confirmation
	// MAC Tb.
	FrameShareB byte = 2
	// FrameConfirmA carries the joiner's confirmation MAC Ta.
	FrameConfirmA byte = 3
	// FrameData carries one encrypted, sequence-numbered payload.
	FrameData byte = 4

	macSize = sha256.Size
	// MaxPayload is the largest payload body a data frame carries.
	MaxPayload = 1 << 20
	// MaxFrameSize is the largest frame a reader needs to accept.
	MaxFrameSize = dataHeaderSize + 1 + MaxPayload + chacha20poly1305.Overhead

	dataHeaderSize = 2 + 8
)

// Context strings and labels of the link protocol.
const (
	labelCI       = "gridchat/v1/link"
	labelADJoiner = "gridchat/v1/link/role/new-device"
	labelADHost   = "gridchat/v1/link/role/old-device"
	labelConfirmA = "gridchat/v1/link/confirm/new-device"
	labelConfirmB = "gridchat/v1/link/confirm/old-device"
	labelSession  = "gridchat/v1/link/session-key"
	labelNewToOld = "gridchat/v1/link/aead/new-to-old"
	labelOldToNew = "gridchat/v1/link/aead/old-to-new"
)

// PayloadKind labels the content of a data frame. It travels inside the
// ciphertext.
type PayloadKind uint8

const (
	// PayloadDeviceOffer (new → old) carries the new device's public keys
	// and its self-signature, as encoded by package e2ee.
	PayloadDeviceOffer PayloadKind = 1
	// PayloadAddDevice (old → new) carries the account's chain with the
	// signed add-device statement appended (the Go SDK sends the whole chain).
	PayloadAddDevice PayloadKind = 2
	// PayloadHistory (old → new) carries one piece of history in the
	// backup archive format.
	PayloadHistory PayloadKind = 3
	// PayloadDone ends the stream of payloads in one direction.
	PayloadDone PayloadKind = 4
)

func (k PayloadKind) valid() bool { return k >= PayloadDeviceOffer && k <= PayloadDone }

// params returns the CPace inputs shared by both sides: the password as
// PRS, the channel identifier binding the protocol, form and rendezvous and
// both roles, and the rendezvous ID as session identifier.
func params(kind Kind, rendezvous, password []byte) cpace.Params {
	ci := lv(nil, []byte(labelCI))
	ci = lv(ci, []byte{byte(kind)})
	ci = lv(ci, rendezvous)
	ci = lv(ci, []byte(labelADJoiner))
	ci = lv(ci, []byte(labelADHost))
	return cpace.Params{PRS: password, CI: ci, SID: bytes.Clone(rendezvous)}
}

// lv appends b with a big-endian uint32 length prefix.
func lv(dst, b []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(b)))
	return append(dst, b...)
}

type keys struct {
	confirmA, confirmB, session []byte
}

func deriveKeys(isk []byte) (keys, error) {
	var k keys
	var err error
	if k.confirmA, err = hkdf.Key(sha256.New, isk, nil, labelConfirmA, 32); err != nil {
		return k, err
	}
	if k.confirmB, err = hkdf.Key(sha256.New, isk, nil, labelConfirmB, 32); err != nil {
		return k, err
	}
	k.session, err = hkdf.Key(sha256.New, isk, nil, labelSession, 32)
	return k, err
}

func confirmMAC(key, share []byte, ad string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(cpaceLV(share))
	m.Write(cpaceLV([]byte(ad)))
	return m.Sum(nil)
}

// cpaceLV is CPace's prepend_len for inputs shorter than 128 bytes.
func cpaceLV(b []byte) []byte { return append([]byte{byte(len(b))}, b...) }

func frameHeader(t byte) []byte { return []byte{FrameVersion, t} }

func checkFrame(op string, f []byte, t byte, size int) error {
	if len(f) < 2 {
		return fmt.Errorf("link: %s: frame of %d bytes: %w", op, len(f), ErrBadFrame)
	}
	if f[0] != FrameVersion {
		return fmt.Errorf("link: %s: frame version %d: %w", op, f[0], ErrVersion)
	}
	if f[1] != t {
		return fmt.Errorf("link: %s: frame type %d, want %d: %w", op, f[1], t, ErrBadFrame)
	}
	if size >= 0 && len(f) != size {
		return fmt.Errorf("link: %s: frame of %d bytes, want %d: %w", op, len(f), size, ErrBadFrame)
	}
	return nil
}

func mapCPaceErr(op string, err error) error {
	if errors.Is(err, cpace.ErrInvalidShare) {
		return fmt.Errorf("link: %s: %w", op, ErrInvalidShare)
	}
	return fmt.Errorf("link: %s: %w", op, err)
}

type state uint8

const (
	stateFresh state = iota
	stateWaiting
	stateDone
	stateAborted
)

// Host is the old device's side of one linking run. It is single use: it
// answers one share and accepts one confirmation, and any failure aborts it
// for good. A Host is not safe for concurrent use.
type Host struct {
	opts       Options
	kind       Kind
	rendezvous []byte
	password   []byte
	expires    time.Time
	state      state
	expectTA   []byte // the joiner's confirmation MAC the host expects
	session    []byte // session key S, until the channel is made
}

// NewHost makes a fresh invitation of the given kind and the host state
// that answers it.
func NewHost(kind Kind, opts Options) (*Host, error) {
	opts = opts.withDefaults()
	h := &Host{opts: opts, kind: kind, expires: opts.Now().Add(opts.Lifetime)}
	var err error
	switch kind {
	case KindQR:
		buf := make([]byte, qrRendezvousSize+qrSecretSize)
		if _, err = io.ReadFull(opts.Rand, buf); err == nil {
			h.rendezvous, h.password = buf[:qrRendezvousSize], buf[qrRendezvousSize:]
		}
	case KindShortCode:
		var syms []byte
		if syms, err = randomSymbols(opts.Rand, ShortCodeLen-1); err == nil {
			h.rendezvous, h.password = syms[:shortRendezvousLen], syms[shortRendezvousLen:]
		}
	default:
		return nil, fmt.Errorf("link: new host: unknown kind %d", kind)
	}
	if err != nil {
		return nil, fmt.Errorf("link: new host: %w", err)
	}
	return h, nil
}

// Rendezvous returns the rendezvous ID the host waits under at the gateway.
func (h *Host) Rendezvous() []byte { return bytes.Clone(h.rendezvous) }

// Expires returns the time after which the invitation is refused.
func (h *Host) Expires() time.Time { return h.expires }

// QRPayload returns the versioned QR payload of a KindQR invitation. It is
// available only until the host answers a share.
func (h *Host) QRPayload() ([]byte, error) {
	if h.kind != KindQR {
		return nil, errors.New("link: QR payload: invitation is a short code")
	}
	if h.state != stateFresh {
		return nil, fmt.Errorf("link: QR payload: %w", ErrUsed)
	}
	return encodeQR(h.rendezvous, h.password, h.expires), nil
}

// ShortCode returns the short code of a KindShortCode invitation, formatted
// as "RRRRR-SSSSS-SSSSC". It is available only until the host answers a
// share.
func (h *Host) ShortCode() (string, error) {
	if h.kind != KindShortCode {
		return "", errors.New("link: short code: invitation is a QR payload")
	}
	if h.state != stateFresh {
		return "", fmt.Errorf("link: short code: %w", ErrUsed)
	}
	return encodeShortCode(h.rendezvous, h.password), nil
}

func (h *Host) abort() {
	h.state = stateAborted
	clear(h.password)
	clear(h.session)
	h.expectTA, h.session = nil, nil
}

func (h *Host) check(op string, want state) error {
	switch {
	case h.state == stateAborted:
		return fmt.Errorf("link: %s: %w", op, ErrAborted)
	case h.state != want:
		return fmt.Errorf("link: %s: %w", op, ErrUsed)
	case !h.opts.Now().Before(h.expires):
		h.abort()
		return fmt.Errorf("link: %s: %w", op, ErrExpired)
	}
	return nil
}

// Respond takes the joiner's share frame and returns the host's share frame,
// which carries the host's confirmation MAC.
func (h *Host) Respond(shareA []byte) ([]byte, error) {
	const op = "host respond"
	if err := h.check(op, stateFresh); err != nil {
		return nil, err
	}
	if err := checkFrame(op, shareA, FrameShareA, 2+cpace.ShareSize); err != nil {
		h.abort()
		return nil, err
	}
	ya := shareA[2:]
	yb, isk, err := cpace.Respond(h.opts.Rand, params(h.kind, h.rendezvous, h.password), ya, []byte(labelADJoiner), []byte(labelADHost))
	clear(h.password)
	if err != nil {
		h.abort()
		return nil, mapCPaceErr(op, err)
	}
	k, err := deriveKeys(isk)
	clear(isk)
	if err != nil {
		h.abort()
		return nil, fmt.Errorf("link: %s: %w", op, err)
	}
	h.session = k.session
	h.expectTA = confirmMAC(k.confirmA, ya, labelADJoiner)
	tb := confirmMAC(k.confirmB, yb, labelADHost)
	h.state = stateWaiting
	out := append(frameHeader(FrameShareB), yb...)
	return append(out, tb...), nil
}

// Confirm checks the joiner's confirmation frame and returns the channel for
// data frames. A wrong confirmation returns ErrWrongCode and aborts the run.
func (h *Host) Confirm(confirmA []byte) (*Channel, error) {
	const op = "host confirm"
	if err := h.check(op, stateWaiting); err != nil {
		return nil, err
	}
	if err := checkFrame(op, confirmA, FrameConfirmA, 2+macSize); err != nil {
		h.abort()
		return nil, err
	}
	if !hmac.Equal(confirmA[2:], h.expectTA) {
		h.abort()
		return nil, fmt.Errorf("link: %s: %w", op, ErrWrongCode)
	}
	ch, err := newChannel(h.session, false)
	clear(h.session)
	h.expectTA, h.session = nil, nil
	if err != nil {
		h.abort()
		return nil, fmt.Errorf("link: %s: %w", op, err)
	}
	h.state = stateDone
	return ch, nil
}

// Joiner is the new device's side of one linking run. It is single use and
// not safe for concurrent use.
type Joiner struct {
	opts   Options
	ticket Ticket
	a      *cpace.Initiator
	state  state
}

// Join starts a run from a ticket and returns the state and the share frame
// to send to the host.
func Join(t Ticket, opts Options) (*Joiner, []byte, error) {
	const op = "join"
	opts = opts.withDefaults()
	if t.Kind != KindQR && t.Kind != KindShortCode {
		return nil, nil, fmt.Errorf("link: %s: unknown ticket kind %d", op, t.Kind)
	}
	if !t.Expires.IsZero() && !opts.Now().Before(t.Expires) {
		return nil, nil, fmt.Errorf("link: %s: %w", op, ErrExpired)
	}
	a, ya, err := cpace.Start(opts.Rand, params(t.Kind, t.Rendezvous, t.Password), []byte(labelADJoiner))
	if err != nil {
		return nil, nil, fmt.Errorf("link: %s: %w", op, err)
	}
	j := &Joiner{opts: opts, ticket: t, a: a, state: stateWaiting}
	return j, append(frameHeader(FrameShareA), ya...), nil
}

// Finish checks the host's share frame and confirmation MAC and returns the
// channel for data frames and the confirmation frame to send to the host. A
// wrong MAC returns ErrWrongCode and aborts the run.
func (j *Joiner) Finish(shareB []byte) (*Channel, []byte, error) {
	const op = "join finish"
	switch {
	case j.state == stateAborted:
		return nil, nil, fmt.Errorf("link: %s: %w", op, ErrAborted)
	case j.state != stateWaiting:
		return nil, nil, fmt.Errorf("link: %s: %w", op, ErrUsed)
	case !j.ticket.Expires.IsZero() && !j.opts.Now().Before(j.ticket.Expires):
		j.state = stateAborted
		return nil, nil, fmt.Errorf("link: %s: %w", op, ErrExpired)
	}
	j.state = stateAborted // until proven otherwise
	if err := checkFrame(op, shareB, FrameShareB, 2+cpace.ShareSize+macSize); err != nil {
		return nil, nil, err
	}
	yb, tb := shareB[2:2+cpace.ShareSize], shareB[2+cpace.ShareSize:]
	ya := j.a.Share()
	isk, err := j.a.Finish(yb, []byte(labelADHost))
	if err != nil {
		return nil, nil, mapCPaceErr(op, err)
	}
	k, err := deriveKeys(isk)
	clear(isk)
	if err != nil {
		return nil, nil, fmt.Errorf("link: %s: %w", op, err)
	}
	if !hmac.Equal(tb, confirmMAC(k.confirmB, yb, labelADHost)) {
		return nil, nil, fmt.Errorf("link: %s: %w", op, ErrWrongCode)
	}
	ch, err := newChannel(k.session, true)
	if err != nil {
		return nil, nil, fmt.Errorf("link: %s: %w", op, err)
	}
	j.state = stateDone
	ta := confirmMAC(k.confirmA, ya, labelADJoiner)
	return ch, append(frameHeader(FrameConfirmA), ta...), nil
}

// Channel encrypts and decrypts the data frames of a confirmed run. Each
// direction has its own key and its own sequence counter starting at 0;
// frames must arrive in order, exactly once. The first failure closes the
// channel for good. A Channel is not safe for concurrent use.
type Channel struct {
	send, recv       cipher.AEAD
	sendSeq, recvSeq uint64
	failed           bool
}

func newChannel(session []byte, joiner bool) (*Channel, error) {
	n2o, err := hkdf.Key(sha256.New, session, nil, labelNewToOld, chacha20poly1305.KeySize)
	if err != nil {
		return nil, err
	}
	o2n, err := hkdf.Key(sha256.New, session, nil, labelOldToNew, chacha20poly1305.KeySize)
	if err != nil {
		return nil, err
	}
	sendKey, recvKey := o2n, n2o
	if joiner {
		sendKey, recvKey = n2o, o2n
	}
	c := &Channel{}
	if c.send, err = chacha20poly1305.New(sendKey); err != nil {
		return nil, err
	}
	if c.recv, err = chacha20poly1305.New(recvKey); err != nil {
		return nil, err
	}
	clear(n2o)
	clear(o2n)
	return c, nil
}

func seqNonce(seq uint64) []byte {
	n := make([]byte, chacha20poly1305.NonceSize)
	binary.BigEndian.PutUint64(n[4:], seq)
	return n
}

// Seal encrypts one payload into the next data frame of this direction.
func (c *Channel) Seal(kind PayloadKind, body []byte) ([]byte, error) {
	const op = "seal"
	if c.failed {
		return nil, fmt.Errorf("link: %s: %w", op, ErrAborted)
	}
	if !kind.valid() {
		return nil, fmt.Errorf("link: %s: unknown payload kind %d", op, kind)
	}
	if len(body) > MaxPayload {
		return nil, fmt.Errorf("link: %s: payload of %d bytes exceeds %d", op, len(body), MaxPayload)
	}
	hdr := binary.BigEndian.AppendUint64(frameHeader(FrameData), c.sendSeq)
	pt := append([]byte{byte(kind)}, body...)
	out := c.send.Seal(hdr, seqNonce(c.sendSeq), pt, hdr)
	c.sendSeq++
	return out, nil
}

// Open decrypts the next data frame from the other side. It returns
// ErrSequence for a replayed, reordered or missing frame and ErrDecrypt for
// an altered, foreign or reflected one.
func (c *Channel) Open(frame []byte) (PayloadKind, []byte, error) {
	const op = "open"
	if c.failed {
		return 0, nil, fmt.Errorf("link: %s: %w", op, ErrAborted)
	}
	c.failed = true // cleared on success
	if err := checkFrame(op, frame, FrameData, -1); err != nil {
		return 0, nil, err
	}
	if len(frame) < dataHeaderSize+1+chacha20poly1305.Overhead || len(frame) > MaxFrameSize {
		return 0, nil, fmt.Errorf("link: %s: data frame of %d bytes: %w", op, len(frame), ErrBadFrame)
	}
	hdr := frame[:dataHeaderSize]
	if seq := binary.BigEndian.Uint64(hdr[2:]); seq != c.recvSeq {
		return 0, nil, fmt.Errorf("link: %s: sequence %d, want %d: %w", op, seq, c.recvSeq, ErrSequence)
	}
	pt, err := c.recv.Open(nil, seqNonce(c.recvSeq), frame[dataHeaderSize:], hdr)
	if err != nil {
		return 0, nil, fmt.Errorf("link: %s: %w", op, ErrDecrypt)
	}
	kind := PayloadKind(pt[0])
	if !kind.valid() {
		return 0, nil, fmt.Errorf("link: %s: payload kind %d: %w", op, kind, ErrBadFrame)
	}
	c.recvSeq++
	c.failed = false
	return kind, pt[1:], nil
}
