package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/pelletier/go-toml/v2"
	"github.com/spf13/pflag"
	"k8s.io/klog/v2"

	"github.com/iagon/gridchat/dht"
	"github.com/iagon/gridchat/gateway"
	"github.com/iagon/gridchat/keyregistry"
	"github.com/iagon/gridchat/linkrelay"
	"github.com/iagon/gridchat/node"
	"github.com/iagon/gridchat/relay"
	"github.com/iagon/gridchat/relay/mailbox"
)

// envPrefix starts every environment variable gridnode reads.
const envPrefix = "GRIDCHAT_"

// maxConfigFileSize caps the configuration file gridnode reads.
const maxConfigFileSize = 1 << 20

// Settings is gridnode's configuration, as written in the TOML file (keys),
// the environment (GRIDCHAT_ + the env tag) and flags. Each layer sets only
// what it names: flags > environment > file > defaults. A number that is 0
// after layering takes its default. The sections after Chain carry the
// services' limits; README.md says which must be equal on every node.
type Settings struct {
	DataDir         string   `toml:"data_dir" env:"DATA_DIR"`
	ListenAddrs     []string `toml:"listen_addrs" env:"LISTEN_ADDRS"`
	GatewayAddr     string   `toml:"gateway_addr" env:"GATEWAY_ADDR"`
	Bootstrap       []string `toml:"bootstrap" env:"BOOTSTRAP"`
	ProtocolPrefix  string   `toml:"protocol_prefix" env:"PROTOCOL_PREFIX"`
	LogLevel        string   `toml:"log_level" env:"LOG_LEVEL"`
	LogFormat       string   `toml:"log_format" env:"LOG_FORMAT"`
	MaxRecordSize   int      `toml:"max_record_size" env:"MAX_RECORD_SIZE"`
	ShutdownTimeout Duration `toml:"shutdown_timeout" env:"SHUTDOWN_TIMEOUT"`

	ConnManager struct {
		LowWater    int      `toml:"low_water" env:"LOW_WATER"`
		HighWater   int      `toml:"high_water" env:"HIGH_WATER"`
		GracePeriod Duration `toml:"grace_period" env:"GRACE_PERIOD"`
	} `toml:"conn_manager" envPrefix:"CONN_MANAGER_"`

	Resources struct {
		MaxMemory          int64 `toml:"max_memory" env:"MAX_MEMORY"`
		MaxFileDescriptors int   `toml:"max_file_descriptors" env:"MAX_FILE_DESCRIPTORS"`
		MaxConns           int   `toml:"max_conns" env:"MAX_CONNS"`
		MaxStreams         int   `toml:"max_streams" env:"MAX_STREAMS"`
		MaxConnsPerPeer    int   `toml:"max_conns_per_peer" env:"MAX_CONNS_PER_PEER"`
		MaxStreamsPerPeer  int   `toml:"max_streams_per_peer" env:"MAX_STREAMS_PER_PEER"`
	} `toml:"resources" envPrefix:"RESOURCES_"`

	Chain struct {
		WitnessQuorum   int      `toml:"witness_quorum" env:"WITNESS_QUORUM"`
		Witnesses       []string `toml:"witnesses" env:"WITNESSES"`
		MaxWitnesses    int      `toml:"max_witnesses" env:"MAX_WITNESSES"`
		WitnessTimeout  Duration `toml:"witness_timeout" env:"WITNESS_TIMEOUT"`
		RequireReceipts bool     `toml:"require_receipts" env:"REQUIRE_RECEIPTS"`
		Anchor          struct {
			Kind      string   `toml:"kind" env:"KIND"`
			Address   string   `toml:"address" env:"ADDRESS"`
			IndexURL  string   `toml:"index_url" env:"INDEX_URL"`
			ProjectID string   `toml:"project_id" env:"PROJECT_ID"`
			KeyFile   string   `toml:"key_file" env:"KEY_FILE"`
			Network   string   `toml:"network" env:"NETWORK"`
			Interval  Duration `toml:"interval" env:"INTERVAL"`
		} `toml:"anchor" envPrefix:"ANCHOR_"`
	} `toml:"chain" envPrefix:"CHAIN_"`

	// WebSocket are the WebSocket API's limits (gateway.WSLimits).
	WebSocket struct {
		MaxFrameBytes            int64    `toml:"max_frame_bytes" env:"MAX_FRAME_BYTES"`
		MaxPreAuthFrameBytes     int64    `toml:"max_pre_auth_frame_bytes" env:"MAX_PRE_AUTH_FRAME_BYTES"`
		HandshakeTimeout         Duration `toml:"handshake_timeout" env:"HANDSHAKE_TIMEOUT"`
		PingInterval             Duration `toml:"ping_interval" env:"PING_INTERVAL"`
		IdleTimeout              Duration `toml:"idle_timeout" env:"IDLE_TIMEOUT"`
		WriteTimeout             Duration `toml:"write_timeout" env:"WRITE_TIMEOUT"`
		SendQueue                int      `toml:"send_queue" env:"SEND_QUEUE"`
		MaxInFlight              int      `toml:"max_in_flight" env:"MAX_IN_FLIGHT"`
		RequestsPerSecond        float64  `toml:"requests_per_second" env:"REQUESTS_PER_SECOND"`
		RequestBurst             int      `toml:"request_burst" env:"REQUEST_BURST"`
		AccountRequestsPerSecond float64  `toml:"account_requests_per_second" env:"ACCOUNT_REQUESTS_PER_SECOND"`
		AccountRequestBurst      int      `toml:"account_request_burst" env:"ACCOUNT_REQUEST_BURST"`
		MaxRateViolations        int      `toml:"max_rate_violations" env:"MAX_RATE_VIOLATIONS"`
		MaxConnsPerDevice        int      `toml:"max_conns_per_device" env:"MAX_CONNS_PER_DEVICE"`
		MaxConns                 int      `toml:"max_conns" env:"MAX_CONNS"`
		AckTimeout               Duration `toml:"ack_timeout" env:"ACK_TIMEOUT"`
		DedupeWindow             int      `toml:"dedupe_window" env:"DEDUPE_WINDOW"`
		MaxPendingPerDevice      int      `toml:"max_pending_per_device" env:"MAX_PENDING_PER_DEVICE"`
		ClockSkew                Duration `toml:"clock_skew" env:"CLOCK_SKEW"`
		PresenceTTL              Duration `toml:"presence_ttl" env:"PRESENCE_TTL"`
	} `toml:"websocket" envPrefix:"WEBSOCKET_"`

	// Delivery are live delivery's limits between nodes (relay.Limits) and
	// the presence cache.
	Delivery struct {
		MaxCiphertext     int      `toml:"max_ciphertext" env:"MAX_CIPHERTEXT"`
		MaxRecipients     int      `toml:"max_recipients" env:"MAX_RECIPIENTS"`
		Window            int      `toml:"window" env:"WINDOW"`
		LookupTimeout     Duration `toml:"lookup_timeout" env:"LOOKUP_TIMEOUT"`
		DialTimeout       Duration `toml:"dial_timeout" env:"DIAL_TIMEOUT"`
		WriteTimeout      Duration `toml:"write_timeout" env:"WRITE_TIMEOUT"`
		LinkIdle          Duration `toml:"link_idle" env:"LINK_IDLE"`
		PresenceCacheSize int      `toml:"presence_cache_size" env:"PRESENCE_CACHE_SIZE"`
	} `toml:"delivery" envPrefix:"DELIVERY_"`

	// Mailbox are the mailbox service's limits (mailbox.Limits).
	Mailbox struct {
		Replicas         int      `toml:"replicas" env:"REPLICAS"`
		WriteQuorum      int      `toml:"write_quorum" env:"WRITE_QUORUM"`
		TTL              Duration `toml:"ttl" env:"TTL"`
		MaxCount         int      `toml:"max_count" env:"MAX_COUNT"`
		MaxPerSender     int      `toml:"max_per_sender" env:"MAX_PER_SENDER"`
		MaxMailboxBytes  int64    `toml:"max_mailbox_bytes" env:"MAX_MAILBOX_BYTES"`
		MaxEnvelopeBytes int      `toml:"max_envelope_bytes" env:"MAX_ENVELOPE_BYTES"`
		MaxTombstones    int      `toml:"max_tombstones" env:"MAX_TOMBSTONES"`
		MaxClockSkew     Duration `toml:"max_clock_skew" env:"MAX_CLOCK_SKEW"`
		ReplayCacheSize  int      `toml:"replay_cache_size" env:"REPLAY_CACHE_SIZE"`
		DeleteMarkTTL    Duration `toml:"delete_mark_ttl" env:"DELETE_MARK_TTL"`
		RequestTimeout   Duration `toml:"request_timeout" env:"REQUEST_TIMEOUT"`
		HandshakeTimeout Duration `toml:"handshake_timeout" env:"HANDSHAKE_TIMEOUT"`
		RepairInterval   Duration `toml:"repair_interval" env:"REPAIR_INTERVAL"`
		ExpiryInterval   Duration `toml:"expiry_interval" env:"EXPIRY_INTERVAL"`
		SubscriberQueue  int      `toml:"subscriber_queue" env:"SUBSCRIBER_QUEUE"`
		MaxSessions      int      `toml:"max_sessions" env:"MAX_SESSIONS"`
	} `toml:"mailbox" envPrefix:"MAILBOX_"`

	// Directory are the key directory's limits (keyregistry.Limits) and the
	// username lifetime its record validator applies.
	Directory struct {
		NonceTTL             Duration `toml:"nonce_ttl" env:"NONCE_TTL"`
		MaxNonces            int      `toml:"max_nonces" env:"MAX_NONCES"`
		NoncesPerConn        int      `toml:"nonces_per_conn" env:"NONCES_PER_CONN"`
		CacheSize            int      `toml:"cache_size" env:"CACHE_SIZE"`
		CacheTTL             Duration `toml:"cache_ttl" env:"CACHE_TTL"`
		LookupQuorum         int      `toml:"lookup_quorum" env:"LOOKUP_QUORUM"`
		LookupTimeout        Duration `toml:"lookup_timeout" env:"LOOKUP_TIMEOUT"`
		PutTimeout           Duration `toml:"put_timeout" env:"PUT_TIMEOUT"`
		RepublishInterval    Duration `toml:"republish_interval" env:"REPUBLISH_INTERVAL"`
		PublishTimeout       Duration `toml:"publish_timeout" env:"PUBLISH_TIMEOUT"`
		ReceiptRetryInterval Duration `toml:"receipt_retry_interval" env:"RECEIPT_RETRY_INTERVAL"`
		UsernameLifetime     Duration `toml:"username_lifetime" env:"USERNAME_LIFETIME"`
	} `toml:"directory" envPrefix:"DIRECTORY_"`

	// LinkRelay are the device-link rendezvous' limits (linkrelay.Limits).
	LinkRelay struct {
		TTL            Duration `toml:"ttl" env:"TTL"`
		MaxLifetime    Duration `toml:"max_lifetime" env:"MAX_LIFETIME"`
		MaxFrameBytes  int      `toml:"max_frame_bytes" env:"MAX_FRAME_BYTES"`
		MaxFrames      int      `toml:"max_frames" env:"MAX_FRAMES"`
		MaxRendezvous  int      `toml:"max_rendezvous" env:"MAX_RENDEZVOUS"`
		MaxPerConn     int      `toml:"max_per_conn" env:"MAX_PER_CONN"`
		OpensPerSecond float64  `toml:"opens_per_second" env:"OPENS_PER_SECOND"`
		OpenBurst      int      `toml:"open_burst" env:"OPEN_BURST"`
		SweepInterval  Duration `toml:"sweep_interval" env:"SWEEP_INTERVAL"`
	} `toml:"link_relay" envPrefix:"LINK_RELAY_"`

	// GossipRepair configures the gossip watchdog (node.GossipRepairSettings).
	GossipRepair struct {
		Interval       Duration `toml:"interval" env:"INTERVAL"`
		Grace          Duration `toml:"grace" env:"GRACE"`
		ReconnectGrace Duration `toml:"reconnect_grace" env:"RECONNECT_GRACE"`
		MaxBackoff     Duration `toml:"max_backoff" env:"MAX_BACKOFF"`
		MaxPerTick     int      `toml:"max_per_tick" env:"MAX_PER_TICK"`
		DialTimeout    Duration `toml:"dial_timeout" env:"DIAL_TIMEOUT"`
	} `toml:"gossip_repair" envPrefix:"GOSSIP_REPAIR_"`
}

// Duration is a time.Duration written as a Go duration string ("90s", "5m").
type Duration time.Duration

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	if v < 0 {
		return fmt.Errorf("negative duration %s", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// defaultDataDir is where a node keeps its state when nothing says otherwise:
// $XDG_DATA_HOME/gridchat, else ~/.local/share/gridchat, else ./gridchat-data.
func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "gridchat")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "share", "gridchat")
	}
	return "gridchat-data"
}

// DefaultSettings returns the settings of a node started with no file,
// environment or flags.
func DefaultSettings() Settings {
	c := node.DefaultConfig()
	var s Settings
	s.DataDir = defaultDataDir()
	s.ListenAddrs = c.ListenAddrs
	s.GatewayAddr = c.GatewayAddr
	s.ProtocolPrefix = c.ProtocolPrefix
	s.LogLevel = "info"
	s.LogFormat = "text"
	s.MaxRecordSize = c.MaxRecordSize
	s.ShutdownTimeout = Duration(c.ShutdownTimeout)
	s.ConnManager.LowWater = c.ConnManager.LowWater
	s.ConnManager.HighWater = c.ConnManager.HighWater
	s.ConnManager.GracePeriod = Duration(c.ConnManager.GracePeriod)
	r := &s.Resources
	r.MaxMemory = c.Resources.MaxMemory
	r.MaxFileDescriptors = c.Resources.MaxFileDescriptors
	r.MaxConns = c.Resources.MaxConns
	r.MaxStreams = c.Resources.MaxStreams
	r.MaxConnsPerPeer = c.Resources.MaxConnsPerPeer
	r.MaxStreamsPerPeer = c.Resources.MaxStreamsPerPeer
	ch := &s.Chain
	ch.WitnessQuorum = c.Chain.WitnessQuorum
	ch.MaxWitnesses = c.Chain.MaxWitnesses
	ch.WitnessTimeout = Duration(c.Chain.WitnessTimeout)
	ch.Anchor.Kind = c.Chain.Anchor.Kind
	ch.Anchor.Network = c.Chain.Anchor.Network
	ch.Anchor.Interval = Duration(c.Chain.Anchor.Interval)

	ws := gateway.DefaultWSLimits()
	w := &s.WebSocket
	w.MaxFrameBytes = ws.MaxFrameBytes
	w.MaxPreAuthFrameBytes = ws.MaxPreAuthFrameBytes
	w.HandshakeTimeout = Duration(ws.HandshakeTimeout)
	w.PingInterval = Duration(ws.PingInterval)
	w.IdleTimeout = Duration(ws.IdleTimeout)
	w.WriteTimeout = Duration(ws.WriteTimeout)
	w.SendQueue = ws.SendQueue
	w.MaxInFlight = ws.MaxInFlight
	w.RequestsPerSecond = ws.RequestsPerSecond
	w.RequestBurst = ws.RequestBurst
	w.AccountRequestsPerSecond = ws.AccountRequestsPerSecond
	w.AccountRequestBurst = ws.AccountRequestBurst
	w.MaxRateViolations = ws.MaxRateViolations
	w.MaxConnsPerDevice = ws.MaxConnsPerDevice
	w.MaxConns = ws.MaxConns
	w.AckTimeout = Duration(ws.AckTimeout)
	w.DedupeWindow = ws.DedupeWindow
	w.MaxPendingPerDevice = ws.MaxPendingPerDevice
	w.ClockSkew = Duration(ws.ClockSkew)
	w.PresenceTTL = Duration(ws.PresenceTTL)

	rl := relay.DefaultLimits()
	dl := &s.Delivery
	dl.MaxCiphertext = rl.MaxCiphertext
	dl.MaxRecipients = rl.MaxRecipients
	dl.Window = rl.Window
	dl.LookupTimeout = Duration(rl.LookupTimeout)
	dl.DialTimeout = Duration(rl.DialTimeout)
	dl.WriteTimeout = Duration(rl.WriteTimeout)
	dl.LinkIdle = Duration(rl.LinkIdle)
	dl.PresenceCacheSize = relay.DefaultPresenceCacheSize

	ml := mailbox.DefaultLimits()
	m := &s.Mailbox
	m.Replicas = ml.Replicas
	m.WriteQuorum = ml.WriteQuorum
	m.TTL = Duration(ml.TTL)
	m.MaxCount = ml.MaxCount
	m.MaxPerSender = ml.MaxPerSender
	m.MaxMailboxBytes = ml.MaxMailboxBytes
	m.MaxEnvelopeBytes = ml.MaxEnvelopeBytes
	m.MaxTombstones = ml.MaxTombstones
	m.MaxClockSkew = Duration(ml.MaxClockSkew)
	m.ReplayCacheSize = ml.ReplayCacheSize
	m.DeleteMarkTTL = Duration(ml.DeleteMarkTTL)
	m.RequestTimeout = Duration(ml.RequestTimeout)
	m.HandshakeTimeout = Duration(ml.HandshakeTimeout)
	m.RepairInterval = Duration(ml.RepairInterval)
	m.ExpiryInterval = Duration(ml.ExpiryInterval)
	m.SubscriberQueue = ml.SubscriberQueue
	m.MaxSessions = ml.MaxSessions

	kl := keyregistry.DefaultLimits()
	dir := &s.Directory
	dir.NonceTTL = Duration(kl.NonceTTL)
	dir.MaxNonces = kl.MaxNonces
	dir.NoncesPerConn = kl.NoncesPerConn
	dir.CacheSize = kl.CacheSize
	dir.CacheTTL = Duration(kl.CacheTTL)
	dir.LookupQuorum = kl.LookupQuorum
	dir.LookupTimeout = Duration(kl.LookupTimeout)
	dir.PutTimeout = Duration(kl.PutTimeout)
	dir.RepublishInterval = Duration(kl.RepublishInterval)
	dir.PublishTimeout = Duration(kl.PublishTimeout)
	dir.ReceiptRetryInterval = Duration(kl.ReceiptRetryInterval)
	dir.UsernameLifetime = Duration(keyregistry.DefaultUsernameLifetime)

	ll := linkrelay.DefaultLimits()
	lr := &s.LinkRelay
	lr.TTL = Duration(ll.TTL)
	lr.MaxLifetime = Duration(ll.MaxLifetime)
	lr.MaxFrameBytes = ll.MaxFrameBytes
	lr.MaxFrames = ll.MaxFrames
	lr.MaxRendezvous = ll.MaxRendezvous
	lr.MaxPerConn = ll.MaxPerConn
	lr.OpensPerSecond = ll.OpensPerSecond
	lr.OpenBurst = ll.OpenBurst
	lr.SweepInterval = Duration(ll.SweepInterval)

	g := &s.GossipRepair
	g.Interval = Duration(c.GossipRepair.Interval)
	g.Grace = Duration(c.GossipRepair.Grace)
	g.ReconnectGrace = Duration(c.GossipRepair.ReconnectGrace)
	g.MaxBackoff = Duration(c.GossipRepair.MaxBackoff)
	g.MaxPerTick = c.GossipRepair.MaxPerTick
	g.DialTimeout = Duration(c.GossipRepair.DialTimeout)
	return s
}

// applyFile overlays the TOML file at path on s. Unknown keys are errors.
func (s *Settings) applyFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxConfigFileSize+1))
	if err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	if len(raw) > maxConfigFileSize {
		return fmt.Errorf("config file %s: larger than %d bytes", path, maxConfigFileSize)
	}
	if err := decodeTOML(raw, s); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

// decodeTOML decodes raw onto s strictly, with errors on one line that name
// the key and its line.
func decodeTOML(raw []byte, s *Settings) error {
	dec := toml.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	err := dec.Decode(s)
	if err == nil {
		return nil
	}
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		var keys []string
		for _, e := range strict.Errors {
			row, _ := e.Position()
			keys = append(keys, fmt.Sprintf("%q (line %d)", strings.Join(e.Key(), "."), row))
		}
		return fmt.Errorf("unknown key %s", strings.Join(keys, ", "))
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		return fmt.Errorf("line %d column %d: %v", row, col, strings.TrimPrefix(de.Error(), "toml: "))
	}
	return err
}

// applyEnv overlays the GRIDCHAT_* variables of environ on s.
func (s *Settings) applyEnv(environ map[string]string) error {
	err := env.ParseWithOptions(s, env.Options{Prefix: envPrefix, Environment: environ})
	if err != nil {
		return fmt.Errorf("environment: %s", oneLine(err.Error()))
	}
	return nil
}

// flagSettings binds gridnode's configuration flags. Only the flags a user
// gave are applied, so a flag's default never hides the file or environment.
type flagSettings struct {
	v     Settings
	apply map[string]func(dst *Settings)
}

func bindFlags(fs *pflag.FlagSet) *flagSettings {
	f := &flagSettings{apply: make(map[string]func(*Settings))}
	d := DefaultSettings()
	v := &f.v
	str := func(name string, p *string, def, usage string, set func(dst *Settings)) {
		fs.StringVar(p, name, def, usage)
		f.apply[name] = set
	}
	num := func(name string, p *int, def int, usage string, set func(dst *Settings)) {
		fs.IntVar(p, name, def, usage)
		f.apply[name] = set
	}
	dur := func(name string, p *Duration, def Duration, usage string, set func(dst *Settings)) {
		*p = def
		fs.Var((*durationFlag)(p), name, usage)
		f.apply[name] = set
	}
	str("data-dir", &v.DataDir, d.DataDir, "directory of the identity key and datastore (data_dir)",
		func(s *Settings) { s.DataDir = v.DataDir })
	fs.StringSliceVar(&v.ListenAddrs, "listen", d.ListenAddrs, "libp2p listen multiaddrs, comma-separated (listen_addrs)")
	f.apply["listen"] = func(s *Settings) { s.ListenAddrs = v.ListenAddrs }
	str("gateway-addr", &v.GatewayAddr, d.GatewayAddr, "HTTP gateway host:port (gateway_addr)",
		func(s *Settings) { s.GatewayAddr = v.GatewayAddr })
	fs.StringSliceVar(&v.Bootstrap, "bootstrap", nil, "bootstrap peer multiaddrs with /p2p/, comma-separated (bootstrap)")
	f.apply["bootstrap"] = func(s *Settings) { s.Bootstrap = v.Bootstrap }
	str("protocol-prefix", &v.ProtocolPrefix, d.ProtocolPrefix, "libp2p protocol prefix of the grid (protocol_prefix)",
		func(s *Settings) { s.ProtocolPrefix = v.ProtocolPrefix })
	str("log-level", &v.LogLevel, d.LogLevel, "debug, info, warn or error (log_level)",
		func(s *Settings) { s.LogLevel = v.LogLevel })
	str("log-format", &v.LogFormat, d.LogFormat, "text or json (log_format)",
		func(s *Settings) { s.LogFormat = v.LogFormat })
	num("max-record-size", &v.MaxRecordSize, d.MaxRecordSize, "largest DHT record value in bytes (max_record_size)",
		func(s *Settings) { s.MaxRecordSize = v.MaxRecordSize })
	dur("shutdown-timeout", &v.ShutdownTimeout, d.ShutdownTimeout, "how long shutdown waits for HTTP requests (shutdown_timeout)",
		func(s *Settings) { s.ShutdownTimeout = v.ShutdownTimeout })
	num("conn-low-water", &v.ConnManager.LowWater, d.ConnManager.LowWater, "connections kept when trimming (conn_manager.low_water)",
		func(s *Settings) { s.ConnManager.LowWater = v.ConnManager.LowWater })
	num("conn-high-water", &v.ConnManager.HighWater, d.ConnManager.HighWater, "connections that start a trim (conn_manager.high_water)",
		func(s *Settings) { s.ConnManager.HighWater = v.ConnManager.HighWater })
	dur("conn-grace-period", &v.ConnManager.GracePeriod, d.ConnManager.GracePeriod, "age before a connection may be trimmed (conn_manager.grace_period)",
		func(s *Settings) { s.ConnManager.GracePeriod = v.ConnManager.GracePeriod })
	fs.Int64Var(&v.Resources.MaxMemory, "max-memory", d.Resources.MaxMemory, "bytes libp2p may reserve (resources.max_memory)")
	f.apply["max-memory"] = func(s *Settings) { s.Resources.MaxMemory = v.Resources.MaxMemory }
	num("max-fds", &v.Resources.MaxFileDescriptors, d.Resources.MaxFileDescriptors, "file descriptors libp2p may use (resources.max_file_descriptors)",
		func(s *Settings) { s.Resources.MaxFileDescriptors = v.Resources.MaxFileDescriptors })
	num("max-conns", &v.Resources.MaxConns, d.Resources.MaxConns, "libp2p connections (resources.max_conns)",
		func(s *Settings) { s.Resources.MaxConns = v.Resources.MaxConns })
	num("max-streams", &v.Resources.MaxStreams, d.Resources.MaxStreams, "libp2p streams (resources.max_streams)",
		func(s *Settings) { s.Resources.MaxStreams = v.Resources.MaxStreams })
	num("max-conns-per-peer", &v.Resources.MaxConnsPerPeer, d.Resources.MaxConnsPerPeer, "connections per peer (resources.max_conns_per_peer)",
		func(s *Settings) { s.Resources.MaxConnsPerPeer = v.Resources.MaxConnsPerPeer })
	num("max-streams-per-peer", &v.Resources.MaxStreamsPerPeer, d.Resources.MaxStreamsPerPeer, "streams per peer (resources.max_streams_per_peer)",
		func(s *Settings) { s.Resources.MaxStreamsPerPeer = v.Resources.MaxStreamsPerPeer })
	num("witness-quorum", &v.Chain.WitnessQuorum, d.Chain.WitnessQuorum, "witness cosignatures a log receipt needs (chain.witness_quorum)",
		func(s *Settings) { s.Chain.WitnessQuorum = v.Chain.WitnessQuorum })
	fs.StringSliceVar(&v.Chain.Witnesses, "witnesses", nil, "peer IDs of the only witnesses that count, comma-separated (chain.witnesses)")
	f.apply["witnesses"] = func(s *Settings) { s.Chain.Witnesses = v.Chain.Witnesses }
	fs.BoolVar(&v.Chain.RequireReceipts, "require-receipts", false, "refuse directory records whose device keys have no log receipt (chain.require_receipts)")
	f.apply["require-receipts"] = func(s *Settings) { s.Chain.RequireReceipts = v.Chain.RequireReceipts }
	str("anchor-kind", &v.Chain.Anchor.Kind, d.Chain.Anchor.Kind, "anchor checkpoints on Cardano: none, socket or blockfrost (chain.anchor.kind)",
		func(s *Settings) { s.Chain.Anchor.Kind = v.Chain.Anchor.Kind })
	str("anchor-address", &v.Chain.Anchor.Address, "", "Cardano node socket path or Blockfrost-compatible base URL (chain.anchor.address)",
		func(s *Settings) { s.Chain.Anchor.Address = v.Chain.Anchor.Address })
	str("anchor-key-file", &v.Chain.Anchor.KeyFile, "", "Ed25519 seed file of the wallet that pays for anchors (chain.anchor.key_file)",
		func(s *Settings) { s.Chain.Anchor.KeyFile = v.Chain.Anchor.KeyFile })
	str("anchor-network", &v.Chain.Anchor.Network, d.Chain.Anchor.Network, "mainnet, preprod or preview (chain.anchor.network)",
		func(s *Settings) { s.Chain.Anchor.Network = v.Chain.Anchor.Network })
	dur("anchor-interval", &v.Chain.Anchor.Interval, d.Chain.Anchor.Interval, "time between two anchors (chain.anchor.interval)",
		func(s *Settings) { s.Chain.Anchor.Interval = v.Chain.Anchor.Interval })
	return f
}

// applyFlags overlays the flags of fs that were given on s.
func (f *flagSettings) applyFlags(fs *pflag.FlagSet, s *Settings) {
	fs.Visit(func(fl *pflag.Flag) {
		if set, ok := f.apply[fl.Name]; ok {
			set(s)
		}
	})
}

// durationFlag is a pflag.Value for Duration.
type durationFlag Duration

func (d *durationFlag) String() string { return time.Duration(*d).String() }
func (d *durationFlag) Set(s string) error {
	return (*Duration)(d).UnmarshalText([]byte(s))
}
func (d *durationFlag) Type() string { return "duration" }

// loadSettings layers defaults, the config file (--config, else
// GRIDCHAT_CONFIG), the environment and the given flags.
func loadSettings(fs *pflag.FlagSet, f *flagSettings, configPath string, environ map[string]string) (Settings, error) {
	s := DefaultSettings()
	if configPath == "" {
		configPath = environ[envPrefix+"CONFIG"]
	}
	if configPath != "" {
		if err := s.applyFile(configPath); err != nil {
			return s, err
		}
	}
	if err := s.applyEnv(environ); err != nil {
		return s, err
	}
	if f != nil {
		f.applyFlags(fs, &s)
	}
	s = s.withDefaults()
	if err := s.validate(); err != nil {
		return s, err
	}
	return s, nil
}

// withDefaults returns s with every number that is 0 replaced by its
// default: a 0 in any layer means "the default".
func (s Settings) withDefaults() Settings {
	d := DefaultSettings()
	walkNumbers(reflect.ValueOf(&s).Elem(), reflect.ValueOf(d), "", func(v, def reflect.Value, _ string) {
		if v.IsZero() {
			v.Set(def)
		}
	})
	return s
}

// validate refuses negative or non-finite numbers and values that
// contradict each other, naming the TOML key. The node checks the rest
// (addresses, the connection manager's water marks, the chain settings).
func (s Settings) validate() error {
	var err error
	walkNumbers(reflect.ValueOf(s), reflect.ValueOf(s), "", func(v, _ reflect.Value, key string) {
		if err != nil {
			return
		}
		switch {
		case v.CanInt() && v.Int() < 0:
			err = fmt.Errorf("%s = %d: must not be negative", key, v.Int())
		case v.CanFloat() && (v.Float() < 0 || math.IsNaN(v.Float()) || math.IsInf(v.Float(), 0)):
			err = fmt.Errorf("%s = %v: must be a positive number", key, v.Float())
		}
	})
	if err != nil {
		return err
	}
	m := s.Mailbox
	if m.WriteQuorum > m.Replicas {
		return fmt.Errorf("mailbox.write_quorum = %d: must not exceed mailbox.replicas (%d)", m.WriteQuorum, m.Replicas)
	}
	if m.DeleteMarkTTL < m.TTL {
		return fmt.Errorf("mailbox.delete_mark_ttl = %s: must be at least mailbox.ttl (%s); raise both together",
			time.Duration(m.DeleteMarkTTL), time.Duration(m.TTL))
	}
	if r := time.Duration(s.Directory.RepublishInterval); r >= dht.DefaultMaxRecordAge {
		return fmt.Errorf("directory.republish_interval = %s: must be below the DHT record lifetime (%s)", r, dht.DefaultMaxRecordAge)
	}
	return nil
}

// walkNumbers calls fn with every number field of v (a Settings or one of
// its sections), the same field of def, and the field's dotted TOML key.
func walkNumbers(v, def reflect.Value, prefix string, fn func(v, def reflect.Value, key string)) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		key := prefix + name
		switch f.Type.Kind() {
		case reflect.Struct:
			walkNumbers(v.Field(i), def.Field(i), key+".", fn)
		case reflect.Int, reflect.Int64, reflect.Float64:
			fn(v.Field(i), def.Field(i), key)
		}
	}
}

// logger builds the slog logger the settings ask for, writing to w. It also
// routes the logs of libraries that use klog (the Tessera log) through it,
// so that they share its level and format: main owns process-wide logging.
func (s Settings) logger(w io.Writer) (*slog.Logger, error) {
	log, err := s.newLogger(w)
	if err != nil {
		return nil, err
	}
	klog.SetSlogLogger(log.With("lib", "klog"))
	return log, nil
}

func (s Settings) newLogger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(s.LogLevel)); err != nil {
		return nil, fmt.Errorf("log_level %q: want debug, info, warn or error", s.LogLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch s.LogFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log_format %q: want text or json", s.LogFormat)
	}
}

// nodeConfig turns settings into a node configuration.
func (s Settings) nodeConfig(log *slog.Logger) node.Config {
	c := node.DefaultConfig()
	c.DataDir = s.DataDir
	c.ListenAddrs = s.ListenAddrs
	c.GatewayAddr = s.GatewayAddr
	c.Bootstrap = s.Bootstrap
	c.ProtocolPrefix = s.ProtocolPrefix
	c.MaxRecordSize = s.MaxRecordSize
	c.ShutdownTimeout = time.Duration(s.ShutdownTimeout)
	c.ConnManager = node.ConnManagerConfig{
		LowWater:    s.ConnManager.LowWater,
		HighWater:   s.ConnManager.HighWater,
		GracePeriod: time.Duration(s.ConnManager.GracePeriod),
	}
	c.Resources = node.ResourceLimits{
		MaxMemory:          s.Resources.MaxMemory,
		MaxFileDescriptors: s.Resources.MaxFileDescriptors,
		MaxConns:           s.Resources.MaxConns,
		MaxStreams:         s.Resources.MaxStreams,
		MaxConnsPerPeer:    s.Resources.MaxConnsPerPeer,
		MaxStreamsPerPeer:  s.Resources.MaxStreamsPerPeer,
	}
	c.Chain.WitnessQuorum = s.Chain.WitnessQuorum
	c.Chain.Witnesses = s.Chain.Witnesses
	c.Chain.MaxWitnesses = s.Chain.MaxWitnesses
	c.Chain.WitnessTimeout = time.Duration(s.Chain.WitnessTimeout)
	c.Directory.Validator.RequireReceipts = s.Chain.RequireReceipts
	a := &c.Chain.Anchor
	a.Kind = s.Chain.Anchor.Kind
	a.Address = s.Chain.Anchor.Address
	a.IndexURL = s.Chain.Anchor.IndexURL
	a.ProjectID = s.Chain.Anchor.ProjectID
	a.KeyFile = s.Chain.Anchor.KeyFile
	a.Network = s.Chain.Anchor.Network
	a.Interval = time.Duration(s.Chain.Anchor.Interval)
	if a.IndexURL == "" && a.Kind == node.AnchorBlockfrost {
		a.IndexURL = a.Address
	}

	w := s.WebSocket
	c.Delivery.WS = gateway.WSLimits{
		MaxFrameBytes:            w.MaxFrameBytes,
		MaxPreAuthFrameBytes:     w.MaxPreAuthFrameBytes,
		HandshakeTimeout:         time.Duration(w.HandshakeTimeout),
		PingInterval:             time.Duration(w.PingInterval),
		IdleTimeout:              time.Duration(w.IdleTimeout),
		WriteTimeout:             time.Duration(w.WriteTimeout),
		SendQueue:                w.SendQueue,
		MaxInFlight:              w.MaxInFlight,
		RequestsPerSecond:        w.RequestsPerSecond,
		RequestBurst:             w.RequestBurst,
		AccountRequestsPerSecond: w.AccountRequestsPerSecond,
		AccountRequestBurst:      w.AccountRequestBurst,
		MaxRateViolations:        w.MaxRateViolations,
		MaxConnsPerDevice:        w.MaxConnsPerDevice,
		MaxConns:                 w.MaxConns,
		AckTimeout:               time.Duration(w.AckTimeout),
		DedupeWindow:             w.DedupeWindow,
		MaxPendingPerDevice:      w.MaxPendingPerDevice,
		ClockSkew:                time.Duration(w.ClockSkew),
		PresenceTTL:              time.Duration(w.PresenceTTL),
	}
	dl := s.Delivery
	// The relay's AckTimeout is left zero: the node then uses the WebSocket
	// API's, so websocket.ack_timeout bounds both.
	c.Delivery.Relay = relay.Limits{
		MaxCiphertext: dl.MaxCiphertext,
		MaxRecipients: dl.MaxRecipients,
		Window:        dl.Window,
		LookupTimeout: time.Duration(dl.LookupTimeout),
		DialTimeout:   time.Duration(dl.DialTimeout),
		WriteTimeout:  time.Duration(dl.WriteTimeout),
		LinkIdle:      time.Duration(dl.LinkIdle),
	}
	c.Delivery.PresenceCacheSize = dl.PresenceCacheSize
	m := s.Mailbox
	c.Mailbox.Limits = mailbox.Limits{
		Replicas:         m.Replicas,
		WriteQuorum:      m.WriteQuorum,
		TTL:              time.Duration(m.TTL),
		MaxCount:         m.MaxCount,
		MaxPerSender:     m.MaxPerSender,
		MaxMailboxBytes:  m.MaxMailboxBytes,
		MaxEnvelopeBytes: m.MaxEnvelopeBytes,
		MaxTombstones:    m.MaxTombstones,
		MaxClockSkew:     time.Duration(m.MaxClockSkew),
		ReplayCacheSize:  m.ReplayCacheSize,
		DeleteMarkTTL:    time.Duration(m.DeleteMarkTTL),
		RequestTimeout:   time.Duration(m.RequestTimeout),
		HandshakeTimeout: time.Duration(m.HandshakeTimeout),
		RepairInterval:   time.Duration(m.RepairInterval),
		ExpiryInterval:   time.Duration(m.ExpiryInterval),
		SubscriberQueue:  m.SubscriberQueue,
		MaxSessions:      m.MaxSessions,
	}
	d := s.Directory
	c.Directory.Limits = keyregistry.Limits{
		NonceTTL:             time.Duration(d.NonceTTL),
		MaxNonces:            d.MaxNonces,
		NoncesPerConn:        d.NoncesPerConn,
		CacheSize:            d.CacheSize,
		CacheTTL:             time.Duration(d.CacheTTL),
		LookupQuorum:         d.LookupQuorum,
		LookupTimeout:        time.Duration(d.LookupTimeout),
		PutTimeout:           time.Duration(d.PutTimeout),
		RepublishInterval:    time.Duration(d.RepublishInterval),
		PublishTimeout:       time.Duration(d.PublishTimeout),
		ReceiptRetryInterval: time.Duration(d.ReceiptRetryInterval),
	}
	c.Directory.Validator.UsernameLifetime = time.Duration(d.UsernameLifetime)
	l := s.LinkRelay
	c.LinkRelay.Limits = linkrelay.Limits{
		TTL:            time.Duration(l.TTL),
		MaxLifetime:    time.Duration(l.MaxLifetime),
		MaxFrameBytes:  l.MaxFrameBytes,
		MaxFrames:      l.MaxFrames,
		MaxRendezvous:  l.MaxRendezvous,
		MaxPerConn:     l.MaxPerConn,
		OpensPerSecond: l.OpensPerSecond,
		OpenBurst:      l.OpenBurst,
		SweepInterval:  time.Duration(l.SweepInterval),
	}
	g := s.GossipRepair
	c.GossipRepair = node.GossipRepairSettings{
		Interval:       time.Duration(g.Interval),
		Grace:          time.Duration(g.Grace),
		ReconnectGrace: time.Duration(g.ReconnectGrace),
		MaxBackoff:     time.Duration(g.MaxBackoff),
		MaxPerTick:     g.MaxPerTick,
		DialTimeout:    time.Duration(g.DialTimeout),
	}
	c.Logger = log
	return c
}

// environMap returns the process environment as a map.
func environMap() map[string]string {
	m := make(map[string]string)
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// oneLine folds a multi-line message onto one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}
