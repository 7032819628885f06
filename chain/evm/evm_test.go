package evm

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"math/big"
	"testing"

	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient/simulated"
	"github.com/iagon/gridchat/chain"
	"github.com/iagon/gridchat/chain/tlog"
	"golang.org/x/mod/sumdb/note"
)

func TestAnchoredRootIsReadBackFromSimulatedChain(t *testing.T) {
	key, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	from := crypto.PubkeyToAddress(key.PublicKey)
	sim := simulated.NewBackend(types.GenesisAlloc{from: {Balance: new(big.Int).Exp(big.NewInt(10), big.NewInt(18), nil)}})
	t.Cleanup(func() { sim.Close() })
	a := New(sim.Client(), key)

	l, err := tlog.Open(context.Background(), tlog.Config{Dir: t.TempDir(), Origin: "gridchat.grid/log/evm-test", Key: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{4}, 32))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	for i := range 3 {
		if _, err := l.Publish(context.Background(), chain.Record{Seq: uint64(i), Body: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	signed, err := l.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	pol := chain.Policy{LogKey: func(string) (note.Verifier, error) { return l.Verifier(), nil }}
	cp, err := pol.OpenCheckpoint(signed)
	if err != nil {
		t.Fatal(err)
	}

	ref, err := a.Anchor(context.Background(), signed)
	if err != nil {
		t.Fatal(err)
	}
	sim.Commit()
	got, block, err := a.Read(context.Background(), ref.TxID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Root != cp.Root || got.Size != cp.Size || got.Origin != cp.Origin || got.NoteHash != sha256.Sum256(signed) || block == 0 {
		t.Fatalf("read back %+v at block %d, want %+v", got, block, cp)
	}
	if ref.Chain != "evm:1337" {
		t.Fatalf("chain %q", ref.Chain)
	}
	// Another account's transaction is not taken for an anchor of ours.
	other, _ := crypto.GenerateKey()
	if _, _, err := New(sim.Client(), other).Read(context.Background(), ref.TxID); err == nil {
		t.Fatal("anchor accepted from another sender")
	}
}

func TestParseCalldataIsStrict(t *testing.T) {
	cp := chain.Checkpoint{Origin: "o", Size: 3}
	good := Calldata(cp, []byte("note"))
	if _, err := ParseCalldata(good); err != nil {
		t.Fatal(err)
	}
	for name, d := range map[string][]byte{
		"empty":     nil,
		"truncated": good[:len(good)-1],
		"trailing":  append(append([]byte{}, good...), 0),
		"no magic":  good[1:],
	} {
		if _, err := ParseCalldata(d); !errors.Is(err, ErrNoAnchor) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func FuzzParseCalldata(f *testing.F) {
	f.Add(Calldata(chain.Checkpoint{Origin: "gridchat.grid/log/x", Size: 7}, []byte("n")))
	f.Fuzz(func(t *testing.T, d []byte) {
		an, err := ParseCalldata(d)
		if err != nil {
			return
		}
		var cp chain.Checkpoint
		cp.Origin, cp.Size, cp.Root = an.Origin, an.Size, an.Root
		re := Calldata(cp, nil)
		if !bytes.Equal(re[:len(re)-32], d[:len(d)-32]) {
			t.Fatalf("calldata does not round-trip")
		}
	})
}
