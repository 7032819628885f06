package main

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iagon/gridchat/gateway"
	"github.com/iagon/gridchat/keyregistry"
	"github.com/iagon/gridchat/linkrelay"
	"github.com/iagon/gridchat/node"
	"github.com/iagon/gridchat/relay"
	"github.com/iagon/gridchat/relay/mailbox"
)

// limitKey is one key of the services' sections: a value set in the file,
// another set in the environment, and the node.Config field it must reach.
type limitKey struct {
	key       string
	file, env any // int, int64, float64 or time.Duration; distinct across keys
	field     func(c node.Config) any
}

// limitKeys lists every key of the [websocket], [delivery], [mailbox],
// [directory], [link_relay] and [gossip_repair] sections. Every value is
// different from every other key's, so a key wired to another key's field
// reads the wrong value.
var limitKeys = []limitKey{
	{"websocket.max_frame_bytes", int64(300_001), int64(400_001), func(c node.Config) any { return c.Delivery.WS.MaxFrameBytes }},
	{"websocket.max_pre_auth_frame_bytes", int64(20_002), int64(30_002), func(c node.Config) any { return c.Delivery.WS.MaxPreAuthFrameBytes }},
	{"websocket.handshake_timeout", 11 * time.Second, 111 * time.Second, func(c node.Config) any { return c.Delivery.WS.HandshakeTimeout }},
	{"websocket.ping_interval", 12 * time.Second, 112 * time.Second, func(c node.Config) any { return c.Delivery.WS.PingInterval }},
	{"websocket.idle_timeout", 13 * time.Second, 113 * time.Second, func(c node.Config) any { return c.Delivery.WS.IdleTimeout }},
	{"websocket.write_timeout", 14 * time.Second, 114 * time.Second, func(c node.Config) any { return c.Delivery.WS.WriteTimeout }},
	{"websocket.send_queue", 1003, 2003, func(c node.Config) any { return c.Delivery.WS.SendQueue }},
	{"websocket.max_in_flight", 1004, 2004, func(c node.Config) any { return c.Delivery.WS.MaxInFlight }},
	{"websocket.requests_per_second", 10.5, 20.5, func(c node.Config) any { return c.Delivery.WS.RequestsPerSecond }},
	{"websocket.request_burst", 1005, 2005, func(c node.Config) any { return c.Delivery.WS.RequestBurst }},
	{"websocket.account_requests_per_second", 11.5, 21.5, func(c node.Config) any { return c.Delivery.WS.AccountRequestsPerSecond }},
	{"websocket.account_request_burst", 1006, 2006, func(c node.Config) any { return c.Delivery.WS.AccountRequestBurst }},
	{"websocket.max_rate_violations", 1007, 2007, func(c node.Config) any { return c.Delivery.WS.MaxRateViolations }},
	{"websocket.max_conns_per_device", 1008, 2008, func(c node.Config) any { return c.Delivery.WS.MaxConnsPerDevice }},
	{"websocket.max_conns", 1009, 2009, func(c node.Config) any { return c.Delivery.WS.MaxConns }},
	{"websocket.ack_timeout", 15 * time.Second, 115 * time.Second, func(c node.Config) any { return c.Delivery.WS.AckTimeout }},
	{"websocket.dedupe_window", 1010, 2010, func(c node.Config) any { return c.Delivery.WS.DedupeWindow }},
	{"websocket.max_pending_per_device", 1011, 2011, func(c node.Config) any { return c.Delivery.WS.MaxPendingPerDevice }},
	{"websocket.clock_skew", 16 * time.Second, 116 * time.Second, func(c node.Config) any { return c.Delivery.WS.ClockSkew }},
	{"websocket.presence_ttl", 17 * time.Second, 117 * time.Second, func(c node.Config) any { return c.Delivery.WS.PresenceTTL }},

	{"delivery.max_ciphertext", 1012, 2012, func(c node.Config) any { return c.Delivery.Relay.MaxCiphertext }},
	{"delivery.max_recipients", 1013, 2013, func(c node.Config) any { return c.Delivery.Relay.MaxRecipients }},
	{"delivery.window", 1014, 2014, func(c node.Config) any { return c.Delivery.Relay.Window }},
	{"delivery.lookup_timeout", 18 * time.Second, 118 * time.Second, func(c node.Config) any { return c.Delivery.Relay.LookupTimeout }},
	{"delivery.dial_timeout", 19 * time.Second, 119 * time.Second, func(c node.Config) any { return c.Delivery.Relay.DialTimeout }},
	{"delivery.write_timeout", 20 * time.Second, 120 * time.Second, func(c node.Config) any { return c.Delivery.Relay.WriteTimeout }},
	{"delivery.link_idle", 21 * time.Second, 121 * time.Second, func(c node.Config) any { return c.Delivery.Relay.LinkIdle }},
	{"delivery.presence_cache_size", 1015, 2015, func(c node.Config) any { return c.Delivery.PresenceCacheSize }},

	{"mailbox.replicas", 7, 9, func(c node.Config) any { return c.Mailbox.Limits.Replicas }},
	{"mailbox.write_quorum", 5, 6, func(c node.Config) any { return c.Mailbox.Limits.WriteQuorum }},
	{"mailbox.ttl", 22 * time.Hour, 122 * time.Hour, func(c node.Config) any { return c.Mailbox.Limits.TTL }},
	{"mailbox.max_count", 1016, 2016, func(c node.Config) any { return c.Mailbox.Limits.MaxCount }},
	{"mailbox.max_per_sender", 1017, 2017, func(c node.Config) any { return c.Mailbox.Limits.MaxPerSender }},
	{"mailbox.max_mailbox_bytes", int64(5_000_018), int64(6_000_018), func(c node.Config) any { return c.Mailbox.Limits.MaxMailboxBytes }},
	{"mailbox.max_envelope_bytes", 1019, 2019, func(c node.Config) any { return c.Mailbox.Limits.MaxEnvelopeBytes }},
	{"mailbox.max_tombstones", 1020, 2020, func(c node.Config) any { return c.Mailbox.Limits.MaxTombstones }},
	{"mailbox.max_clock_skew", 23 * time.Second, 123 * time.Second, func(c node.Config) any { return c.Mailbox.Limits.MaxClockSkew }},
	{"mailbox.replay_cache_size", 1021, 2021, func(c node.Config) any { return c.Mailbox.Limits.ReplayCacheSize }},
	{"mailbox.delete_mark_ttl", 24 * time.Hour, 124 * time.Hour, func(c node.Config) any { return c.Mailbox.Limits.DeleteMarkTTL }},
	{"mailbox.request_timeout", 25 * time.Second, 125 * time.Second, func(c node.Config) any { return c.Mailbox.Limits.RequestTimeout }},
	{"mailbox.handshake_timeout", 26 * time.Second, 126 * time.Second, func(c node.Config) any { return c.Mailbox.Limits.HandshakeTimeout }},
	{"mailbox.repair_interval", 27 * time.Second, 127 * time.Second, func(c node.Config) any { return c.Mailbox.Limits.RepairInterval }},
	{"mailbox.expiry_interval", 28 * time.Second, 128 * time.Second, func(c node.Config) any { return c.Mailbox.Limits.ExpiryInterval }},
	{"mailbox.subscriber_queue", 1022, 2022, func(c node.Config) any { return c.Mailbox.Limits.SubscriberQueue }},
	{"mailbox.max_sessions", 1023, 2023, func(c node.Config) any { return c.Mailbox.Limits.MaxSessions }},

	{"directory.nonce_ttl", 29 * time.Second, 129 * time.Second, func(c node.Config) any { return c.Directory.Limits.NonceTTL }},
	{"directory.max_nonces", 1024, 2024, func(c node.Config) any { return c.Directory.Limits.MaxNonces }},
	{"directory.nonces_per_conn", 1025, 2025, func(c node.Config) any { return c.Directory.Limits.NoncesPerConn }},
	{"directory.cache_size", 1026, 2026, func(c node.Config) any { return c.Directory.Limits.CacheSize }},
	{"directory.cache_ttl", 30 * time.Second, 130 * time.Second, func(c node.Config) any { return c.Directory.Limits.CacheTTL }},
	{"directory.lookup_quorum", 1027, 2027, func(c node.Config) any { return c.Directory.Limits.LookupQuorum }},
	{"directory.lookup_timeout", 31 * time.Second, 131 * time.Second, func(c node.Config) any { return c.Directory.Limits.LookupTimeout }},
	{"directory.put_timeout", 32 * time.Second, 132 * time.Second, func(c node.Config) any { return c.Directory.Limits.PutTimeout }},
	{"directory.republish_interval", 33 * time.Second, 133 * time.Second, func(c node.Config) any { return c.Directory.Limits.RepublishInterval }},
	{"directory.publish_timeout", 34 * time.Second, 134 * time.Second, func(c node.Config) any { return c.Directory.Limits.PublishTimeout }},
	{"directory.receipt_retry_interval", 35 * time.Second, 135 * time.Second, func(c node.Config) any { return c.Directory.Limits.ReceiptRetryInterval }},
	{"directory.username_lifetime", 36 * time.Hour, 136 * time.Hour, func(c node.Config) any { return c.Directory.Validator.UsernameLifetime }},

	{"link_relay.ttl", 37 * time.Second, 137 * time.Second, func(c node.Config) any { return c.LinkRelay.Limits.TTL }},
	{"link_relay.max_lifetime", 38 * time.Minute, 138 * time.Minute, func(c node.Config) any { return c.LinkRelay.Limits.MaxLifetime }},
	{"link_relay.max_frame_bytes", 1028, 2028, func(c node.Config) any { return c.LinkRelay.Limits.MaxFrameBytes }},
	{"link_relay.max_frames", 1029, 2029, func(c node.Config) any { return c.LinkRelay.Limits.MaxFrames }},
	{"link_relay.max_rendezvous", 1030, 2030, func(c node.Config) any { return c.LinkRelay.Limits.MaxRendezvous }},
	{"link_relay.max_per_conn", 1031, 2031, func(c node.Config) any { return c.LinkRelay.Limits.MaxPerConn }},
	{"link_relay.opens_per_second", 0.75, 1.75, func(c node.Config) any { return c.LinkRelay.Limits.OpensPerSecond }},
	{"link_relay.open_burst", 1032, 2032, func(c node.Config) any { return c.LinkRelay.Limits.OpenBurst }},
	{"link_relay.sweep_interval", 39 * time.Second, 139 * time.Second, func(c node.Config) any { return c.LinkRelay.Limits.SweepInterval }},

	{"gossip_repair.interval", 40 * time.Second, 140 * time.Second, func(c node.Config) any { return c.GossipRepair.Interval }},
	{"gossip_repair.grace", 41 * time.Second, 141 * time.Second, func(c node.Config) any { return c.GossipRepair.Grace }},
	{"gossip_repair.reconnect_grace", 42 * time.Second, 142 * time.Second, func(c node.Config) any { return c.GossipRepair.ReconnectGrace }},
	{"gossip_repair.max_backoff", 43 * time.Second, 143 * time.Second, func(c node.Config) any { return c.GossipRepair.MaxBackoff }},
	{"gossip_repair.max_per_tick", 1033, 2033, func(c node.Config) any { return c.GossipRepair.MaxPerTick }},
	{"gossip_repair.dial_timeout", 44 * time.Second, 144 * time.Second, func(c node.Config) any { return c.GossipRepair.DialTimeout }},
}

// limitSections are the sections limitKeys covers.
var limitSections = []string{"websocket", "delivery", "mailbox", "directory", "link_relay", "gossip_repair"}

// tomlValue writes v as a TOML value.
func tomlValue(v any) string {
	switch v := v.(type) {
	case time.Duration:
		return strconv.Quote(v.String())
	case float64:
		s := strconv.FormatFloat(v, 'f', -1, 64)
		if !strings.Contains(s, ".") {
			s += ".0"
		}
		return s
	default:
		return fmt.Sprint(v)
	}
}

// limitsFile writes every limit key with its file value, section by section.
func limitsFile(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	section := ""
	for _, k := range limitKeys {
		sec, name, _ := strings.Cut(k.key, ".")
		if sec != section {
			fmt.Fprintf(&b, "[%s]\n", sec)
			section = sec
		}
		fmt.Fprintf(&b, "%s = %s\n", name, tomlValue(k.file))
	}
	path := filepath.Join(t.TempDir(), "limits.toml")
	writeFile(t, path, b.String())
	return path
}

// envName is the environment variable of a TOML key.
func envName(key string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

func TestLimitKeysCoverEverySettingOfTheServiceSections(t *testing.T) {
	var want []string
	walkNumbers(reflect.ValueOf(Settings{}), reflect.ValueOf(Settings{}), "", func(_, _ reflect.Value, key string) {
		sec, _, _ := strings.Cut(key, ".")
		if slices.Contains(limitSections, sec) {
			want = append(want, key)
		}
	})
	var got []string
	seen := make(map[string]bool)
	values := make(map[any]string)
	for _, k := range limitKeys {
		if seen[k.key] {
			t.Errorf("%s listed twice", k.key)
		}
		seen[k.key] = true
		got = append(got, k.key)
		for _, v := range []any{k.file, k.env} {
			if other, ok := values[v]; ok {
				t.Errorf("%s and %s both use %v: a swap of their fields would go unseen", other, k.key, v)
			}
			values[v] = k.key
		}
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("limitKeys cover\n%v\nthe sections have\n%v", got, want)
	}
}

func TestEveryLimitKeyInTheFileReachesItsNodeConfigField(t *testing.T) {
	s, err := loadSettings(nil, nil, limitsFile(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := s.nodeConfig(nil)
	for _, k := range limitKeys {
		if got := k.field(c); !reflect.DeepEqual(got, k.file) {
			t.Errorf("%s = %s in the file: node.Config has %v (%T)", k.key, tomlValue(k.file), got, got)
		}
	}
	// Left zero so that websocket.ack_timeout bounds deliver streams too.
	if c.Delivery.Relay.AckTimeout != 0 {
		t.Errorf("relay AckTimeout = %s, want 0 (the WebSocket API's)", c.Delivery.Relay.AckTimeout)
	}
}

func TestEnvironmentOverridesTheFileForEveryLimitKey(t *testing.T) {
	environ := make(map[string]string)
	for _, k := range limitKeys {
		v := fmt.Sprint(k.env)
		if f, ok := k.env.(float64); ok {
			v = strconv.FormatFloat(f, 'f', -1, 64)
		}
		environ[envName(k.key)] = v
	}
	s, err := loadSettings(nil, nil, limitsFile(t), environ)
	if err != nil {
		t.Fatal(err)
	}
	c := s.nodeConfig(nil)
	for _, k := range limitKeys {
		if got := k.field(c); !reflect.DeepEqual(got, k.env) {
			t.Errorf("%s=%s over the file's %s: node.Config has %v", envName(k.key), environ[envName(k.key)], tomlValue(k.file), got)
		}
	}
}

func TestZeroLimitMeansTheDefault(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "zero.toml")
	writeFile(t, conf, "[mailbox]\nreplicas = 0\nttl = \"0s\"\n[link_relay]\nopens_per_second = 0.0\n")
	s, err := loadSettings(nil, nil, conf, map[string]string{"GRIDCHAT_WEBSOCKET_MAX_CONNS": "0"})
	if err != nil {
		t.Fatal(err)
	}
	c := s.nodeConfig(nil)
	if c.Mailbox.Limits.Replicas != mailbox.DefaultLimits().Replicas || c.Mailbox.Limits.TTL != mailbox.DefaultLimits().TTL ||
		c.LinkRelay.Limits.OpensPerSecond != linkrelay.DefaultLimits().OpensPerSecond ||
		c.Delivery.WS.MaxConns != gateway.DefaultWSLimits().MaxConns {
		t.Errorf("zeros did not take the defaults: mailbox %+v, link_relay %+v, websocket max_conns %d",
			c.Mailbox.Limits, c.LinkRelay.Limits, c.Delivery.WS.MaxConns)
	}
}

func TestBadLimitIsRefusedNamingTheKey(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		environ map[string]string
		want    string
	}{
		{"negative count", "[mailbox]\nmax_count = -1\n", nil, "mailbox.max_count = -1: must not be negative"},
		{"negative bytes", "[websocket]\nmax_frame_bytes = -5\n", nil, "websocket.max_frame_bytes = -5"},
		{"negative rate", "[websocket]\nrequests_per_second = -2.5\n", nil, "websocket.requests_per_second"},
		{"nan rate", "[link_relay]\nopens_per_second = nan\n", nil, "link_relay.opens_per_second"},
		{"infinite rate in env", "", map[string]string{"GRIDCHAT_WEBSOCKET_ACCOUNT_REQUESTS_PER_SECOND": "+Inf"}, "websocket.account_requests_per_second"},
		{"negative in env", "", map[string]string{"GRIDCHAT_DELIVERY_WINDOW": "-3"}, "delivery.window = -3"},
		{"negative max_per_tick", "[gossip_repair]\nmax_per_tick = -1\n", nil, "gossip_repair.max_per_tick"},
		{"negative duration", "[directory]\ncache_ttl = \"-1s\"\n", nil, "negative duration"},
		{"quorum over replicas", "[mailbox]\nreplicas = 2\nwrite_quorum = 3\n", nil, "mailbox.write_quorum = 3: must not exceed mailbox.replicas (2)"},
		{"quorum over the default replicas", "", map[string]string{"GRIDCHAT_MAILBOX_WRITE_QUORUM": "4"}, "mailbox.write_quorum = 4"},
		{"delete marks shorter than the ttl", "[mailbox]\nttl = \"1000h\"\n", nil, "mailbox.delete_mark_ttl = 744h0m0s: must be at least mailbox.ttl (1000h0m0s)"},
		{"republish past the record lifetime", "[directory]\nrepublish_interval = \"36h\"\n", nil, "directory.republish_interval"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conf := filepath.Join(t.TempDir(), "bad.toml")
			writeFile(t, conf, tc.file)
			_, err := loadSettings(nil, nil, conf, tc.environ)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q: want one line with %q", err, tc.want)
			}
		})
	}
}

func TestDefaultSettingsStateTheServicesDefaults(t *testing.T) {
	c := DefaultSettings().nodeConfig(nil)
	if c.Delivery.WS != gateway.DefaultWSLimits() {
		t.Errorf("websocket:\n got %+v\nwant %+v", c.Delivery.WS, gateway.DefaultWSLimits())
	}
	rl := relay.DefaultLimits()
	rl.AckTimeout = 0 // the WebSocket API's
	if c.Delivery.Relay != rl {
		t.Errorf("delivery:\n got %+v\nwant %+v", c.Delivery.Relay, rl)
	}
	if c.Delivery.PresenceCacheSize != relay.DefaultPresenceCacheSize {
		t.Errorf("delivery.presence_cache_size = %d", c.Delivery.PresenceCacheSize)
	}
	if c.Mailbox.Limits != mailbox.DefaultLimits() {
		t.Errorf("mailbox:\n got %+v\nwant %+v", c.Mailbox.Limits, mailbox.DefaultLimits())
	}
	if c.Directory.Limits != keyregistry.DefaultLimits() {
		t.Errorf("directory:\n got %+v\nwant %+v", c.Directory.Limits, keyregistry.DefaultLimits())
	}
	if c.Directory.Validator.UsernameLifetime != keyregistry.DefaultUsernameLifetime {
		t.Errorf("directory.username_lifetime = %s", c.Directory.Validator.UsernameLifetime)
	}
	ll := linkrelay.DefaultLimits()
	ll.MinIDBytes, ll.MaxIDBytes = 0, 0 // not settable: the clients' code formats fix them
	if c.LinkRelay.Limits != ll {
		t.Errorf("link_relay:\n got %+v\nwant %+v", c.LinkRelay.Limits, ll)
	}
	if c.GossipRepair != node.DefaultConfig().GossipRepair {
		t.Errorf("gossip_repair:\n got %+v\nwant %+v", c.GossipRepair, node.DefaultConfig().GossipRepair)
	}
}

// settingKeys returns the dotted TOML key and the environment variable of
// every setting of t.
func settingKeys(t reflect.Type, key, env string) [][2]string {
	var out [][2]string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if f.Type.Kind() == reflect.Struct {
			out = append(out, settingKeys(f.Type, key+name+".", env+f.Tag.Get("envPrefix"))...)
			continue
		}
		out = append(out, [2]string{key + name, env + f.Tag.Get("env")})
	}
	return out
}

func TestReadmeListsEverySetting(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	for _, k := range settingKeys(reflect.TypeOf(Settings{}), "", envPrefix) {
		row := fmt.Sprintf("| `%s` | `%s` |", k[0], k[1])
		if !strings.Contains(readme, row) {
			t.Errorf("README.md has no row starting %s", row)
		}
	}
}
