package tlog

import (
	"testing"

	"github.com/iagon/gridchat/chain"
	flog "github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
)

type notev = note.Verifier

func signCheckpoint(t *testing.T, s note.Signer, cp chain.Checkpoint) []byte {
	t.Helper()
	text := flog.Checkpoint{Origin: cp.Origin, Size: cp.Size, Hash: cp.Root[:]}.Marshal()
	n, err := note.Sign(&note.Note{Text: string(text)}, s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
