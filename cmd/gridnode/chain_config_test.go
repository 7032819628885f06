package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/iagon/gridchat/node"
)

func TestChainSettingsReachTheNodeConfigFromFileEnvironmentAndFlags(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "gridnode.toml")
	if err := os.WriteFile(conf, []byte(`
[chain]
witness_quorum = 2
witnesses = ["12D3KooWA", "12D3KooWB"]
require_receipts = true
[chain.anchor]
kind = "blockfrost"
address = "http://127.0.0.1:3000/api/v0"
key_file = "/k"
network = "preview"
interval = "10m"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	f := bindFlags(fs)
	if err := fs.Parse([]string{"--anchor-interval", "20m"}); err != nil {
		t.Fatal(err)
	}
	s, err := loadSettings(fs, f, conf, map[string]string{"GRIDCHAT_CHAIN_MAX_WITNESSES": "3"})
	if err != nil {
		t.Fatal(err)
	}
	c := s.nodeConfig(nil).Chain
	a := c.Anchor
	if c.WitnessQuorum != 2 || c.MaxWitnesses != 3 || !slices.Equal(c.Witnesses, []string{"12D3KooWA", "12D3KooWB"}) ||
		!s.nodeConfig(nil).Directory.Validator.RequireReceipts {
		t.Errorf("chain settings %+v", c)
	}
	if a.Kind != node.AnchorBlockfrost || a.Address != "http://127.0.0.1:3000/api/v0" || a.IndexURL != a.Address ||
		a.KeyFile != "/k" || a.Network != "preview" || a.Interval != 20*time.Minute {
		t.Errorf("anchor settings %+v", a)
	}
	if d := DefaultSettings().nodeConfig(nil).Chain; d.Anchor.Kind != node.AnchorNone || d.WitnessQuorum != 1 {
		t.Errorf("default chain settings %+v", d)
	}
}
