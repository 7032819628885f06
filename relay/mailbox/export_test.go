package mailbox

import (
	"io"
	"slices"

	"github.com/iagon/gridchat/wire"
)

// This file lends the frame codec to the external tests (package mailbox_test) that play a peer which speaks
// the mailbox protocol correctly up to a point and then stalls.

// Frame types the external tests write or expect.
const (
	FrameCaughtUp  = tCaughtUp
	FrameSyncReply = tSyncReply
)

// WriteFetchFrame writes the first frame of a gateway's fetch with the device's signed request.
func WriteFetchFrame(w io.Writer, r SignedRequest) error {
	return writeFrame(w, &frame{Type: tFetch, DevicePublic: r.DevicePublic, Request: r.Request, Body: r.Body})
}

// WriteSyncFrame writes the first frame of an anti-entropy exchange of dev's mailbox by a replica that holds
// nothing of it.
func WriteSyncFrame(w io.Writer, dev wire.DeviceID) error {
	return writeFrame(w, &frame{Type: tSync, Device: slices.Clone(dev[:])})
}

// WriteEmptyFrame writes a frame of type typ with no fields (FrameCaughtUp, for one).
func WriteEmptyFrame(w io.Writer, typ uint8) error { return writeFrame(w, &frame{Type: typ}) }

// ReadFrameType reads one frame, decoded strictly, and returns its type.
func ReadFrameType(r io.Reader) (uint8, error) {
	f, err := readFrame(r, maxControlFrame)
	if err != nil {
		return 0, err
	}
	return f.Type, nil
}
