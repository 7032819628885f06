package relay

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/iagon/gridchat/wire"
)

// Frame kinds of the deliver protocol.
const (
	kindDeliver = 1 // request: deliver one envelope to one device
	kindResult  = 2 // response: the outcome of a request
)

// Result statuses of the deliver protocol.
const (
	resultDelivered = 1 // the device's client acknowledged the envelope
	resultOffline   = 2 // the device is not connected to this gateway
	resultFailed    = 3 // see code and reason
)

const (
	frameHeader  = 4                                                // big-endian length of the rest
	deliverFixed = 1 + 8 + wire.MessageIDSize + 2*wire.DeviceIDSize // kind, request id, ids
	resultFixed  = 1 + 8 + 1 + 2 + 1                                // kind, id, status, code, reason length
	maxReasonLen = 64
)

var errFrame = errors.New("relay: malformed deliver frame")

// deliverReq is one request on a deliver stream.
type deliverReq struct {
	id  uint64
	env wire.Envelope
}

// deliverRes is one response on a deliver stream.
type deliverRes struct {
	id  uint64
	out Outcome
}

func writeDeliver(w *bufio.Writer, r deliverReq) error {
	var hdr [frameHeader + deliverFixed]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(deliverFixed+len(r.env.Ciphertext)))
	hdr[4] = kindDeliver
	binary.BigEndian.PutUint64(hdr[5:13], r.id)
	p := hdr[13:]
	p = p[copy(p, r.env.MessageID[:]):]
	p = p[copy(p, r.env.Sender[:]):]
	copy(p, r.env.Recipient[:])
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := w.Write(r.env.Ciphertext)
	return err
}

func writeResult(w *bufio.Writer, r deliverRes) error {
	reason := r.out.Reason
	if len(reason) > maxReasonLen {
		reason = reason[:maxReasonLen]
	}
	var hdr [frameHeader + resultFixed]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(resultFixed+len(reason)))
	hdr[4] = kindResult
	binary.BigEndian.PutUint64(hdr[5:13], r.id)
	switch r.out.Status {
	case wire.StatusDelivered:
		hdr[13] = resultDelivered
	case wire.StatusOffline:
		hdr[13] = resultOffline
	default:
		hdr[13] = resultFailed
	}
	binary.BigEndian.PutUint16(hdr[14:16], uint16(r.out.Code))
	hdr[16] = byte(len(reason))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := w.WriteString(reason)
	return err
}

// readFrame reads one length-prefixed frame of at most max bytes into buf (grown as needed) and returns it.
func readFrame(r *bufio.Reader, buf []byte, max int) ([]byte, error) {
	var hdr [frameHeader]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[:]))
	if n < 1 || n > max {
		return nil, fmt.Errorf("%w: frame of %d bytes (max %d)", errFrame, n, max)
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("%w: truncated: %v", errFrame, err)
	}
	return buf, nil
}

// parseDeliver decodes a deliver request frame (without its length prefix). The ciphertext is copied.
func parseDeliver(f []byte, maxCiphertext int) (deliverReq, error) {
	if len(f) < deliverFixed || f[0] != kindDeliver {
		return deliverReq{}, fmt.Errorf("%w: not a deliver request", errFrame)
	}
	ct := f[deliverFixed:]
	if len(ct) == 0 || len(ct) > maxCiphertext {
		return deliverReq{}, fmt.Errorf("%w: ciphertext of %d bytes", errFrame, len(ct))
	}
	var r deliverReq
	r.id = binary.BigEndian.Uint64(f[1:9])
	p := f[9:]
	p = p[copy(r.env.MessageID[:], p):]
	p = p[copy(r.env.Sender[:], p):]
	copy(r.env.Recipient[:], p)
	r.env.Ciphertext = append([]byte(nil), ct...)
	return r, nil
}

// parseResult decodes a result frame (without its length prefix).
func parseResult(f []byte) (deliverRes, error) {
	if len(f) < resultFixed || f[0] != kindResult {
		return deliverRes{}, fmt.Errorf("%w: not a result", errFrame)
	}
	n := int(f[12])
	if n > maxReasonLen || len(f) != resultFixed+n {
		return deliverRes{}, fmt.Errorf("%w: bad result length", errFrame)
	}
	r := deliverRes{id: binary.BigEndian.Uint64(f[1:9])}
	code := wire.Code(binary.BigEndian.Uint16(f[10:12]))
	reason := string(f[resultFixed:])
	switch f[9] {
	case resultDelivered:
		if code != 0 || n != 0 {
			return deliverRes{}, fmt.Errorf("%w: delivered with a code", errFrame)
		}
		r.out = Outcome{Status: wire.StatusDelivered}
	case resultOffline:
		if code != 0 || n != 0 {
			return deliverRes{}, fmt.Errorf("%w: offline with a code", errFrame)
		}
		r.out = Outcome{Status: wire.StatusOffline}
	case resultFailed:
		if code == 0 || n == 0 {
			return deliverRes{}, fmt.Errorf("%w: failure without code or reason", errFrame)
		}
		for i := 0; i < n; i++ {
			if c := reason[i]; !(c == '_' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
				return deliverRes{}, fmt.Errorf("%w: reason is not snake_case", errFrame)
			}
		}
		r.out = Outcome{Status: wire.StatusFailed, Code: code, Reason: reason}
	default:
		return deliverRes{}, fmt.Errorf("%w: unknown status %d", errFrame, f[9])
	}
	return r, nil
}
