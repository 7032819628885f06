package main

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/iagon/gridchat/node"
)

func TestSettingsPrecedenceIsFlagsThenEnvThenFileThenDefaults(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "c.toml")
	writeFile(t, conf, `
data_dir = "/from/file"
gateway_addr = "127.0.0.1:1111"
protocol_prefix = "/file"
log_level = "debug"

[conn_manager]
low_water = 11
grace_period = "11s"
`)
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	flags := bindFlags(fs)
	if err := fs.Parse([]string{"--gateway-addr", "127.0.0.1:3333", "--conn-grace-period", "33s"}); err != nil {
		t.Fatal(err)
	}
	environ := map[string]string{
		"GRIDCHAT_GATEWAY_ADDR":           "127.0.0.1:2222", // loses to the flag
		"GRIDCHAT_PROTOCOL_PREFIX":        "/env",           // beats the file
		"GRIDCHAT_CONN_MANAGER_LOW_WATER": "22",             // beats the file
		"GRIDCHAT_LISTEN_ADDRS":           "/ip4/127.0.0.1/tcp/1,/ip4/127.0.0.1/udp/1/quic-v1",
		"UNRELATED":                       "x",
	}
	s, err := loadSettings(fs, flags, conf, environ)
	if err != nil {
		t.Fatal(err)
	}
	d := DefaultSettings()
	checks := []struct {
		name      string
		got, want any
	}{
		{"data_dir (file)", s.DataDir, "/from/file"},
		{"gateway_addr (flag over env over file)", s.GatewayAddr, "127.0.0.1:3333"},
		{"protocol_prefix (env over file)", s.ProtocolPrefix, "/env"},
		{"log_level (file)", s.LogLevel, "debug"},
		{"conn_manager.low_water (env over file)", s.ConnManager.LowWater, 22},
		{"conn_manager.grace_period (flag over file)", s.ConnManager.GracePeriod, Duration(33 * time.Second)},
		{"conn_manager.high_water (default)", s.ConnManager.HighWater, d.ConnManager.HighWater},
		{"listen_addrs (env list)", s.ListenAddrs, []string{"/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/udp/1/quic-v1"}},
		{"resources.max_conns (default)", s.Resources.MaxConns, d.Resources.MaxConns},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestConfigFileNamedByEnvironment(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "c.toml")
	writeFile(t, conf, `data_dir = "/named/by/env"`)
	s, err := loadSettings(nil, nil, "", map[string]string{"GRIDCHAT_CONFIG": conf})
	if err != nil {
		t.Fatal(err)
	}
	if s.DataDir != "/named/by/env" {
		t.Errorf("data_dir = %q", s.DataDir)
	}
}

func TestDefaultSettingsMatchNodeDefaults(t *testing.T) {
	got := DefaultSettings().nodeConfig(nil)
	want := node.DefaultConfig()
	if !reflect.DeepEqual(got.ListenAddrs, want.ListenAddrs) || got.GatewayAddr != want.GatewayAddr ||
		got.ConnManager != want.ConnManager || got.Resources != want.Resources ||
		got.MaxRecordSize != want.MaxRecordSize || got.ShutdownTimeout != want.ShutdownTimeout {
		t.Errorf("settings defaults differ from node defaults:\n got %+v\nwant %+v", got, want)
	}
}

func TestDecodeTOMLIsStrict(t *testing.T) {
	tests := map[string]string{
		"unknown top-level key": `colour = "red"`,
		"unknown nested key":    "[resources]\nmax_ram = 1",
		"wrong type":            `listen_addrs = "not a list"`,
		"bad duration":          `shutdown_timeout = "soon"`,
		"negative duration":     `shutdown_timeout = "-1s"`,
		"duplicate key":         "data_dir = \"a\"\ndata_dir = \"b\"",
	}
	for name, doc := range tests {
		t.Run(name, func(t *testing.T) {
			var s Settings
			err := decodeTOML([]byte(doc), &s)
			if err == nil {
				t.Fatal("accepted")
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}

func FuzzDecodeTOML(f *testing.F) {
	f.Add([]byte(`data_dir = "/x"` + "\n[conn_manager]\nlow_water = 3\n"))
	f.Add([]byte("listen_addrs = [\"/ip4/0.0.0.0/tcp/7400\"]\nshutdown_timeout = \"5s\"\n"))
	f.Add([]byte("[resources]\nmax_memory = 1024\n"))
	f.Add([]byte("[mailbox]\nreplicas = 5\nwrite_quorum = 3\nttl = \"240h\"\ndelete_mark_ttl = \"264h\"\n"))
	f.Add([]byte("[websocket]\nrequests_per_second = 12.5\nmax_conns = 9\nidle_timeout = \"2m\"\n[delivery]\nwindow = 64\n"))
	f.Add([]byte("[directory]\nrepublish_interval = \"6h\"\nusername_lifetime = \"720h\"\n[link_relay]\nopens_per_second = nan\n"))
	f.Add([]byte("[gossip_repair]\nmax_per_tick = -1\ninterval = \"1s\"\n[mailbox]\nwrite_quorum = 9\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		s := DefaultSettings()
		err := decodeTOML(raw, &s)
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Fatalf("multi-line error %q", err)
		}
		if err == nil && time.Duration(s.ShutdownTimeout) < 0 {
			t.Fatal("negative duration accepted")
		}
		if err != nil {
			return
		}
		s = s.withDefaults()
		if err := s.validate(); err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		m := s.Mailbox
		if m.WriteQuorum > m.Replicas || m.DeleteMarkTTL < m.TTL || s.WebSocket.RequestsPerSecond <= 0 ||
			s.LinkRelay.OpensPerSecond <= 0 || s.GossipRepair.MaxPerTick <= 0 {
			t.Fatalf("inconsistent settings accepted: %+v", s)
		}
	})
}

func TestExampleConfigFileIsValidAndStatesTheDefaults(t *testing.T) {
	// Decoded over nothing, so a key missing from the file stays zero and
	// differs from its default.
	var s Settings
	if err := s.applyFile(filepath.Join("..", "..", "deploy", "gridnode.toml")); err != nil {
		t.Fatal(err)
	}
	if err := s.validate(); err != nil {
		t.Fatal(err)
	}
	want := DefaultSettings()
	want.DataDir = "/var/lib/gridchat"
	want.Bootstrap = []string{}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("deploy/gridnode.toml differs from the defaults:\n got %+v\nwant %+v", s, want)
	}
}
