package witness

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/iagon/gridchat/chain"
)

// ProtocolID is the libp2p stream protocol of the witness in a grid with the
// default protocol prefix "/gridchat" (ProtocolIDFor).
const ProtocolID = "/gridchat/witness/1.0.0"

// Topic is the pubsub topic on which checkpoints are gossiped in a grid with
// the default protocol prefix "/gridchat" (TopicFor).
const Topic = "/gridchat/checkpoints/1"

// ProtocolIDFor returns the witness stream protocol of the grid whose
// protocol prefix is prefix: prefix + "/witness/1.0.0". The empty prefix is
// the default one and gives ProtocolID.
func ProtocolIDFor(prefix protocol.ID) protocol.ID {
	if prefix == "" {
		return ProtocolID
	}
	return prefix + "/witness/1.0.0"
}

// TopicFor returns the checkpoint topic of the grid whose protocol prefix is
// prefix: prefix + "/checkpoints/1". The empty prefix is the default one and
// gives Topic.
func TopicFor(prefix protocol.ID) string {
	if prefix == "" {
		return Topic
	}
	return string(prefix) + "/checkpoints/1"
}

// Status codes of a witness response; they follow the HTTP codes of C2SP
// tlog-witness and are never renumbered.
const (
	StatusOK            = 200 // payload: cosignature lines
	StatusMalformed     = 400 // the request does not decode
	StatusBadSignature  = 403 // unknown log or bad log signature
	StatusConflict      = 409 // payload: the size the witness holds, then "\n"
	StatusDistrusted    = 410 // the log showed a split view; the witness no longer cosigns it
	StatusInconsistent  = 422 // the consistency proof does not verify
	StatusInternalError = 500 // the witness failed to store its state
	StatusFull          = 503 // the witness keeps state for as many logs as it may
)

// request is a C2SP tlog-witness add-checkpoint body:
//
//	old <size>
//	<base64 consistency proof hash>...
//	<blank line>
//	<signed checkpoint note>
//
// The same body is gossiped on the checkpoint topic.
type request struct {
	Old        uint64
	Proof      [][]byte
	Checkpoint []byte
}

var errMalformed = errors.New("witness: malformed message")

func (r *request) marshal() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "old %d\n", r.Old)
	for _, h := range r.Proof {
		b.WriteString(base64.StdEncoding.EncodeToString(h) + "\n")
	}
	b.WriteString("\n")
	b.Write(r.Checkpoint)
	return b.Bytes()
}

func parseRequest(b []byte) (*request, error) {
	bad := func(why string) (*request, error) {
		return nil, fmt.Errorf("witness: parse add-checkpoint: %s: %w", why, errMalformed)
	}
	line, rest, ok := strings.Cut(string(b), "\n")
	olds, found := strings.CutPrefix(line, "old ")
	if !ok || !found {
		return bad("missing old line")
	}
	old, err := strconv.ParseUint(olds, 10, 63)
	if err != nil || strconv.FormatUint(old, 10) != olds {
		return bad("invalid old size")
	}
	r := &request{Old: old}
	for {
		line, rest, ok = strings.Cut(rest, "\n")
		if !ok {
			return bad("truncated proof")
		}
		if line == "" {
			break
		}
		if len(r.Proof) == chain.MaxProofHashes {
			return bad("too many proof hashes")
		}
		h, err := base64.StdEncoding.Strict().DecodeString(line)
		if err != nil || len(h) != 32 {
			return bad("invalid proof hash")
		}
		r.Proof = append(r.Proof, h)
	}
	if len(rest) == 0 || len(rest) > chain.MaxCheckpointSize {
		return bad("invalid checkpoint size")
	}
	r.Checkpoint = []byte(rest)
	return r, nil
}

// response is a status and its payload.
type response struct {
	Status  int
	Payload []byte
}

func (r *response) marshal() []byte {
	return append([]byte(strconv.Itoa(r.Status)+"\n"), r.Payload...)
}

func parseResponse(b []byte) (*response, error) {
	line, rest, ok := strings.Cut(string(b), "\n")
	if !ok || len(line) != 3 {
		return nil, fmt.Errorf("witness: parse response: no status: %w", errMalformed)
	}
	st, err := strconv.Atoi(line)
	if err != nil || st < 100 || st > 599 {
		return nil, fmt.Errorf("witness: parse response: bad status: %w", errMalformed)
	}
	return &response{Status: st, Payload: []byte(rest)}, nil
}

// Frames on the stream are a uvarint length and that many bytes.
func writeFrame(w io.Writer, b []byte) error {
	buf := binary.AppendUvarint(make([]byte, 0, len(b)+binary.MaxVarintLen64), uint64(len(b)))
	_, err := w.Write(append(buf, b...))
	return err
}

func readFrame(r io.Reader, max int) ([]byte, error) {
	br := &byteReader{r: r}
	n, err := binary.ReadUvarint(br)
	if err != nil {
		return nil, fmt.Errorf("witness: read frame: %w", err)
	}
	if n > uint64(max) {
		return nil, fmt.Errorf("witness: read frame: %d bytes over limit %d: %w", n, max, errMalformed)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("witness: read frame: %w", err)
	}
	return b, nil
}

type byteReader struct {
	r io.Reader
	b [1]byte
}

func (br *byteReader) ReadByte() (byte, error) {
	_, err := io.ReadFull(br.r, br.b[:])
	return br.b[0], err
}
