package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/iagon/gridchat/dht"
	"github.com/iagon/gridchat/keyregistry"
)

// Default ports of a node. QUIC shares the TCP port number (it is UDP).
const (
	DefaultP2PPort       = 7400
	DefaultWebSocketPort = 7401
	DefaultGatewayAddr   = "127.0.0.1:8080"
)

// ErrConfig marks every error about a Config: a bad value, a missing field.
var ErrConfig = errors.New("invalid node configuration")

// Config configures a node. Start from DefaultConfig; New fills any zero
// field with its default too, so a Config with only DataDir set works.
type Config struct {
	// DataDir holds the identity key and the datastore. Required unless
	// InMemory is set (then an empty DataDir gives a throwaway identity).
	DataDir string
	// InMemory keeps the datastore in memory instead of Pebble on disk.
	// For tests only: a restart loses everything.
	InMemory bool
	// ListenAddrs are the libp2p multiaddrs to listen on (TCP, QUIC-v1,
	// WebSocket). Default: TCP and QUIC on port 7400 and WebSocket on 7401,
	// all interfaces.
	ListenAddrs []string
	// GatewayAddr is the host:port of the HTTP gateway. Default
	// "127.0.0.1:8080"; port 0 picks a free port.
	GatewayAddr string
	// Bootstrap are multiaddrs (ending in /p2p/<peer ID>) of grid nodes to
	// join through. Empty for the first node of a grid.
	Bootstrap []string
	// ProtocolPrefix separates this grid from any other libp2p network:
	// every stream protocol and pubsub topic of the grid is the prefix
	// followed by /<name>/<version> (docs/PROTOCOL.md §0.3), so nodes with
	// different prefixes share no DHT, delivery, mailbox, presence or
	// checkpoints. It starts with "/", has no spaces and does not end in
	// "/". Default "/gridchat", which gives /gridchat/kad/1.0.0,
	// /gridchat/deliver/1.0.0 and so on.
	ProtocolPrefix string
	// ConnManager keeps the number of libp2p connections between its water marks.
	ConnManager ConnManagerConfig
	// Resources are the libp2p resource manager's limits.
	Resources ResourceLimits
	// MaxRecordSize caps a DHT record value in bytes. Default 64 KiB.
	MaxRecordSize int
	// Validators adds DHT record namespaces and their validators; services
	// and tests plug their namespaces in here.
	Validators map[string]record.Validator
	// Directory configures the key directory (clock, username lifetime,
	// limits, publication log).
	Directory keyregistry.Settings
	// Delivery configures the WebSocket API, live delivery and presence.
	Delivery DeliverySettings
	// Mailbox configures the mailbox service (limits, clock).
	Mailbox MailboxSettings
	// LinkRelay configures the device-link rendezvous (limits, clock).
	LinkRelay LinkRelaySettings
	// Chain configures the node's key publication log, its witness, the
	// receipt quorum and anchoring (see ChainSettings).
	Chain ChainSettings
	// GossipRepair configures the watchdog that repairs connected grid
	// peers gossipsub has stopped exchanging messages with.
	GossipRepair GossipRepairSettings
	// ConnectionGater, when set, may refuse connections to and from peers
	// (an operator's block list; tests use it to partition a swarm).
	ConnectionGater connmgr.ConnectionGater
	// Logger receives the node's structured logs. Default: discard.
	Logger *slog.Logger
	// ShutdownTimeout bounds how long Close waits for HTTP requests in
	// flight. Default 5 s.
	ShutdownTimeout time.Duration
}

// ConnManagerConfig configures libp2p's connection manager: above HighWater
// connections it trims down to LowWater, sparing connections younger than
// GracePeriod.
type ConnManagerConfig struct {
	LowWater    int           // default 64
	HighWater   int           // default 192
	GracePeriod time.Duration // default 1 minute
}

// ResourceLimits are the libp2p resource manager's limits for the whole node
// and per peer. Zero fields take their defaults.
type ResourceLimits struct {
	MaxMemory          int64 // bytes libp2p may reserve; default 512 MiB
	MaxFileDescriptors int   // default 1024
	MaxConns           int   // connections, all peers; default 512
	MaxStreams         int   // streams, all peers; default 8192
	MaxConnsPerPeer    int   // default 8
	MaxStreamsPerPeer  int   // default 512
}

// DefaultConfig returns the configuration of a node with every default set
// except DataDir.
func DefaultConfig() Config {
	return Config{}.withDefaults()
}

// withDefaults returns c with every zero field set to its default. It is the
// one place defaults live.
func (c Config) withDefaults() Config {
	if len(c.ListenAddrs) == 0 {
		c.ListenAddrs = []string{
			fmt.Sprintf("/ip4/0.0.0.0/tcp/%d", DefaultP2PPort),
			fmt.Sprintf("/ip4/0.0.0.0/udp/%d/quic-v1", DefaultP2PPort),
			fmt.Sprintf("/ip4/0.0.0.0/tcp/%d/ws", DefaultWebSocketPort),
		}
	}
	if c.GatewayAddr == "" {
		c.GatewayAddr = DefaultGatewayAddr
	}
	if c.ProtocolPrefix == "" {
		c.ProtocolPrefix = string(dht.DefaultProtocolPrefix)
	}
	if c.ConnManager.LowWater == 0 {
		c.ConnManager.LowWater = 64
	}
	if c.ConnManager.HighWater == 0 {
		c.ConnManager.HighWater = 192
	}
	if c.ConnManager.GracePeriod == 0 {
		c.ConnManager.GracePeriod = time.Minute
	}
	r := &c.Resources
	if r.MaxMemory == 0 {
		r.MaxMemory = 512 << 20
	}
	if r.MaxFileDescriptors == 0 {
		r.MaxFileDescriptors = 1024
	}
	if r.MaxConns == 0 {
		r.MaxConns = 512
	}
	if r.MaxStreams == 0 {
		r.MaxStreams = 8192
	}
	if r.MaxConnsPerPeer == 0 {
		r.MaxConnsPerPeer = 8
	}
	if r.MaxStreamsPerPeer == 0 {
		r.MaxStreamsPerPeer = 512
	}
	if c.MaxRecordSize == 0 {
		c.MaxRecordSize = dht.DefaultMaxValueSize
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 5 * time.Second
	}
	c.Chain = c.Chain.withDefaults()
	c.GossipRepair = c.GossipRepair.withDefaults()
	return c
}

// parsed is what validate derives from a Config.
type parsed struct {
	listen    []multiaddr.Multiaddr
	bootstrap []peer.AddrInfo
	witnesses []peer.ID
}

// validate checks a defaulted Config and parses its addresses. Its errors
// match ErrConfig and name the field.
func (c Config) validate() (parsed, error) {
	var p parsed
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrConfig, field, fmt.Sprintf(format, args...))
	}
	if c.DataDir == "" && !c.InMemory {
		return p, bad("data_dir", "required")
	}
	for _, s := range c.ListenAddrs {
		a, err := multiaddr.NewMultiaddr(strings.TrimSpace(s))
		if err != nil {
			return p, bad("listen_addrs", "%q: %v", s, err)
		}
		p.listen = append(p.listen, a)
	}
	for _, s := range c.Bootstrap {
		ai, err := peer.AddrInfoFromString(strings.TrimSpace(s))
		if err != nil {
			return p, bad("bootstrap", "%q: %v (want a multiaddr ending in /p2p/<peer ID>)", s, err)
		}
		p.bootstrap = append(p.bootstrap, *ai)
	}
	if _, port, err := net.SplitHostPort(c.GatewayAddr); err != nil {
		return p, bad("gateway_addr", "%q: %v", c.GatewayAddr, err)
	} else if _, err := net.LookupPort("tcp", port); err != nil {
		return p, bad("gateway_addr", "%q: bad port", c.GatewayAddr)
	}
	if !strings.HasPrefix(c.ProtocolPrefix, "/") || strings.HasSuffix(c.ProtocolPrefix, "/") ||
		strings.ContainsAny(c.ProtocolPrefix, " \t\n") {
		return p, bad("protocol_prefix", "%q: must start with /, not end with / and have no spaces", c.ProtocolPrefix)
	}
	cm := c.ConnManager
	if cm.LowWater < 0 || cm.HighWater < cm.LowWater || cm.GracePeriod < 0 {
		return p, bad("conn_manager", "need 0 <= low_water (%d) <= high_water (%d) and grace_period >= 0", cm.LowWater, cm.HighWater)
	}
	r := c.Resources
	if r.MaxMemory < 0 || r.MaxFileDescriptors < 0 || r.MaxConns < 0 || r.MaxStreams < 0 ||
		r.MaxConnsPerPeer < 0 || r.MaxStreamsPerPeer < 0 {
		return p, bad("resources", "limits must not be negative")
	}
	if c.MaxRecordSize < 0 {
		return p, bad("max_record_size", "must not be negative")
	}
	if c.ShutdownTimeout < 0 {
		return p, bad("shutdown_timeout", "must not be negative")
	}
	if err := c.GossipRepair.validate(); err != nil {
		return p, bad("gossip_repair", "%v", err)
	}
	w, err := c.Chain.validate()
	if err != nil {
		return p, bad("chain", "%v", err)
	}
	p.witnesses = w
	return p, nil
}
