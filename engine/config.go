package engine

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Config is the server configuration. DefaultConfig fills every field; flags,
// environment and YAML overwrite what they set, then Validate checks it.
type Config struct {
	Listen string `yaml:"listen"` // WebSocket listener, host:port
	Admin  string `yaml:"admin"`  // admin HTTP listener; "" disables it
	Path   string `yaml:"path"`   // WebSocket endpoint path
	Loops  int    `yaml:"loops"`  // event loops; 0 means GOMAXPROCS
	Echo   bool   `yaml:"echo"`   // echo every data message (conformance and benchmarks)

	MaxMessage       int           `yaml:"max_message"`       // bytes of one message's payload
	MaxConns         int           `yaml:"max_conns"`         // 0: derived from RLIMIT_NOFILE
	PingInterval     time.Duration `yaml:"ping_interval"`     // idle time before a ping
	IdleTimeout      time.Duration `yaml:"idle_timeout"`      // no traffic for this long closes
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"` // accept to completed upgrade
	CloseTimeout     time.Duration `yaml:"close_timeout"`     // our close frame to the peer's
	DrainGrace       time.Duration `yaml:"drain_grace"`       // spread of close 1001 on drain
	// DrainReconnectWindow spreads the reconnect delay a drain's disconnect
	// pushes name uniformly over [0, window), so the clients of a drained
	// node come back to the others spread out rather than in one storm
	// (clients honour the delay; see drain_spread.go). 0 names none.
	DrainReconnectWindow time.Duration `yaml:"drain_reconnect_window"`

	// AllowedOrigins lists Origin header values accepted at the handshake;
	// empty accepts any (and requests without Origin are always accepted:
	// only browsers send it).
	AllowedOrigins []string `yaml:"allowed_origins"`

	// Outbound bounds per connection: publications wait in a connection's
	// queue while the socket is busy; over either bound the slow-consumer
	// policy applies: "close" (close 1013) or "lag" (drop, then tell the
	// client with a lagged push so it recovers from history).
	MaxOutboundBytes    int    `yaml:"max_outbound_bytes"`
	MaxOutboundMessages int    `yaml:"max_outbound_messages"`
	SlowConsumer        string `yaml:"slow_consumer"`
	// SocketSendBuffer caps each connection's kernel send buffer
	// (SO_SNDBUF, bytes; 0 keeps the kernel's autotuning, which on Linux
	// lets a socket that is not read hold up to tcp_wmem's maximum, 4 MiB
	// by default). The outbound bounds above cover process memory; this
	// one bounds the kernel's share and makes a slow consumer show sooner.
	// A cap such as 64 KiB suits small pushes to many clients, but it also
	// caps one connection's throughput at that much per round trip and
	// makes a fast reader hit the slow-consumer bound sooner in a burst, so
	// the default keeps autotuning.
	SocketSendBuffer int `yaml:"socket_send_buffer"`
	// FlushInterval, when set, makes each loop write its subscribers at
	// most once per interval instead of after every batch of
	// publications: with many channels each connection then gets several
	// frames per writev, trading that much latency for fan-out capacity.
	FlushInterval time.Duration `yaml:"flush_interval"`
	// RecoveryMax caps the publications in one subscribe-recovery or
	// history reply.
	RecoveryMax int `yaml:"recovery_max"`
	// OutboundTimeout closes (1008) a connection whose own writes
	// (replies, echoes, pongs) have stayed over MaxOutboundBytes for this
	// long. While they are over it the server stops reading from the
	// connection, so its further requests wait in the kernel.
	OutboundTimeout time.Duration `yaml:"outbound_timeout"`

	// Abuse limits. MaxSubsPerConn caps one connection's subscriptions.
	// CommandRate and CommandBurst are a per-connection token bucket for
	// protocol commands (0 rate: no limit): over it a command gets error
	// 429, and a client that keeps going for a second is closed (1008).
	// MaxConnsPerIP and HandshakeRatePerIP/HandshakeBurstPerIP limit each
	// client address before the upgrade (HTTP 429); 0 disables them, the
	// default, because behind a load balancer every client shares its
	// address.
	MaxSubsPerConn      int     `yaml:"max_subs_per_conn"`
	CommandRate         int     `yaml:"command_rate"`
	CommandBurst        int     `yaml:"command_burst"`
	MaxConnsPerIP       int     `yaml:"max_conns_per_ip"`
	HandshakeRatePerIP  float64 `yaml:"handshake_rate_per_ip"`
	HandshakeBurstPerIP int     `yaml:"handshake_burst_per_ip"`

	// Authentication (package auth). Every protocol connection must
	// present a JWT at the upgrade unless InsecureNoAuth is set (benchmarks
	// and local development only). Keys: AuthSecretFile (an HS256 secret
	// file), AuthPEMFiles (public keys), AuthJWKS (a JWKS file or URL);
	// with none of them the development secret (auth.DevSecretPath) is
	// used and the server says so at startup. RefreshWindow is how long a
	// client has, after its token expired and the server sent a refresh
	// push, to send a new one. MaxConnsPerUser caps one user's connections
	// on this node (0: no cap). Echo mode has no protocol and does not
	// authenticate.
	InsecureNoAuth  bool          `yaml:"insecure_no_auth"`
	AuthSecretFile  string        `yaml:"auth_secret_file"`
	AuthPEMFiles    []string      `yaml:"auth_pem_files"`
	AuthJWKS        string        `yaml:"auth_jwks"`
	AuthAudience    string        `yaml:"auth_audience"`
	AuthIssuer      string        `yaml:"auth_issuer"`
	AuthLeeway      time.Duration `yaml:"auth_leeway"`
	RefreshWindow   time.Duration `yaml:"refresh_window"`
	MaxConnsPerUser int           `yaml:"max_conns_per_user"`

	// Broker is "memory" (one node, the default) or a Redis URL
	// (redis://host:6379/0, rediss://, unix://, redis+sentinel://,
	// redis+cluster://: see broker.RedisConfig) joining this node to a
	// cluster.
	Broker string `yaml:"broker"`

	// Compression is permessage-deflate (RFC 7692, see engine/deflate.go):
	// "on" (the default) accepts clients' offers, "off" declines them.
	// Messages shorter than CompressionMinSize bytes go out uncompressed;
	// CompressionLevel is flate's level, 1 (fastest) to 9.
	Compression        string `yaml:"compression"`
	CompressionMinSize int    `yaml:"compression_min_size"`
	CompressionLevel   int    `yaml:"compression_level"`

	// HandoffSocket (unix:///run/wsedge/handoff.sock) is where this
	// process hands its connections to a new one; Takeover is the socket
	// of a running process whose connections this one takes over at
	// start (docs/DESIGN.md, "Handoff"). Both are wired by cmd/wsedge.
	HandoffSocket string `yaml:"handoff_socket"`
	Takeover      string `yaml:"-"`

	// Namespaces are the channel namespaces clients may use; a channel
	// "ns:name" in an unknown namespace is refused with 404.
	Namespaces []Namespace `yaml:"namespaces"`

	// Ingest is the ingest socket and HTTP publish API (ingest_config.go).
	Ingest IngestConfig `yaml:"ingest"`
}

// Namespace holds the options of the channels "name:*".
type Namespace struct {
	Name        string        `yaml:"name"`
	HistorySize int           `yaml:"history_size"` // publications kept per channel; 0: no history, no offsets
	HistoryTTL  time.Duration `yaml:"history_ttl"`  // how long each is kept
	Presence    bool          `yaml:"presence"`     // track who is subscribed
	JoinLeave   bool          `yaml:"join_leave"`   // push join/leave events to subscribers
	Publish     bool          `yaml:"publish"`      // clients may publish
}

// DefaultConfig returns the configuration `wsedge serve` runs with when
// nothing is set.
func DefaultConfig() Config {
	return Config{
		Listen:               "127.0.0.1:8080",
		Admin:                "127.0.0.1:9090",
		Path:                 "/ws",
		MaxMessage:           64 << 10,
		PingInterval:         25 * time.Second,
		IdleTimeout:          60 * time.Second,
		HandshakeTimeout:     5 * time.Second,
		CloseTimeout:         2 * time.Second,
		DrainGrace:           10 * time.Second,
		DrainReconnectWindow: 5 * time.Second,

		MaxOutboundBytes:    256 << 10,
		MaxOutboundMessages: 4096,
		SlowConsumer:        "close",
		RecoveryMax:         1000,
		Broker:              "memory",
		OutboundTimeout:     10 * time.Second,
		RefreshWindow:       15 * time.Second,
		MaxSubsPerConn:      128,
		CommandRate:         1000,
		CommandBurst:        1000,
		HandshakeBurstPerIP: 10,
		Compression:         "on",
		CompressionMinSize:  128,
		CompressionLevel:    1,
		Ingest:              defaultIngestConfig(),
		Namespaces: []Namespace{
			{Name: "chat", HistorySize: 100, HistoryTTL: 5 * time.Minute, Presence: true, JoinLeave: true, Publish: true},
			{Name: "bench", HistorySize: 16, HistoryTTL: time.Minute, Publish: true},
			{Name: "user", HistorySize: 50, HistoryTTL: 10 * time.Minute},
		},
	}
}

// ErrConfig is wrapped by every validation error.
var ErrConfig = errors.New("invalid configuration")

// Validate checks c and names the first bad field.
func (c *Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrConfig, field, fmt.Sprintf(format, args...))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return bad("listen", "%v", err)
	}
	if c.Admin != "" {
		if _, _, err := net.SplitHostPort(c.Admin); err != nil {
			return bad("admin", "%v", err)
		}
	}
	if !strings.HasPrefix(c.Path, "/") {
		return bad("path", "%q does not start with /", c.Path)
	}
	switch {
	case c.Loops < 0 || c.Loops > 256:
		return bad("loops", "%d not in 0..256", c.Loops)
	case c.MaxMessage < 125 || c.MaxMessage > 1<<30:
		return bad("max-message", "%d not in 125..1GiB", c.MaxMessage)
	case c.MaxConns < 0:
		return bad("max-conns", "%d is negative", c.MaxConns)
	case c.PingInterval < time.Second:
		return bad("ping-interval", "%v is under 1s", c.PingInterval)
	case c.IdleTimeout <= c.PingInterval:
		return bad("idle-timeout", "%v must exceed ping-interval %v", c.IdleTimeout, c.PingInterval)
	case c.HandshakeTimeout < 100*time.Millisecond:
		return bad("handshake-timeout", "%v is under 100ms", c.HandshakeTimeout)
	case c.CloseTimeout < 100*time.Millisecond:
		return bad("close-timeout", "%v is under 100ms", c.CloseTimeout)
	case c.DrainGrace < 0:
		return bad("drain-grace", "%v is negative", c.DrainGrace)
	case c.DrainReconnectWindow < 0 || c.DrainReconnectWindow > time.Hour:
		return bad("drain-reconnect-window", "%v not in 0..1h", c.DrainReconnectWindow)
	case c.MaxOutboundBytes < 1024:
		return bad("max-outbound-bytes", "%d is under 1024", c.MaxOutboundBytes)
	case c.MaxOutboundMessages < 1:
		return bad("max-outbound-messages", "%d is under 1", c.MaxOutboundMessages)
	case c.FlushInterval < 0 || c.FlushInterval > time.Second:
		return bad("flush-interval", "%v not in 0..1s", c.FlushInterval)
	case c.SocketSendBuffer < 0:
		return bad("socket-send-buffer", "%d is negative", c.SocketSendBuffer)
	case c.SlowConsumer != "close" && c.SlowConsumer != "lag":
		return bad("slow-consumer", "%q is neither close nor lag", c.SlowConsumer)
	case c.RecoveryMax < 1:
		return bad("recovery-max", "%d is under 1", c.RecoveryMax)
	case c.Broker != "memory" && !strings.Contains(c.Broker, "://"):
		return bad("broker", "%q is neither memory nor a redis URL", c.Broker)
	case c.RefreshWindow < 100*time.Millisecond:
		return bad("refresh-window", "%v is under 100ms", c.RefreshWindow)
	case c.MaxConnsPerUser < 0:
		return bad("max-conns-per-user", "%d is negative", c.MaxConnsPerUser)
	case c.AuthLeeway < 0:
		return bad("auth-leeway", "%v is negative", c.AuthLeeway)
	case c.OutboundTimeout < 100*time.Millisecond:
		return bad("outbound-timeout", "%v is under 100ms", c.OutboundTimeout)
	case c.MaxSubsPerConn < 1 || c.MaxSubsPerConn > 1<<16:
		return bad("max-subs-per-conn", "%d not in 1..65536", c.MaxSubsPerConn)
	case c.CommandRate < 0:
		return bad("command-rate", "%d is negative", c.CommandRate)
	case c.CommandRate > 0 && c.CommandBurst < 1:
		return bad("command-burst", "%d is under 1 while command-rate is set", c.CommandBurst)
	case c.MaxConnsPerIP < 0:
		return bad("max-conns-per-ip", "%d is negative", c.MaxConnsPerIP)
	case c.HandshakeRatePerIP < 0:
		return bad("handshake-rate-per-ip", "%v is negative", c.HandshakeRatePerIP)
	case c.Compression != "on" && c.Compression != "off":
		return bad("compression", "%q is neither on nor off", c.Compression)
	case c.CompressionMinSize < 0:
		return bad("compression-min-size", "%d is negative", c.CompressionMinSize)
	case c.CompressionLevel < 1 || c.CompressionLevel > 9:
		return bad("compression-level", "%d not in 1..9", c.CompressionLevel)
	case c.HandshakeRatePerIP > 0 && c.HandshakeBurstPerIP < 1:
		return bad("handshake-burst-per-ip", "%d is under 1 while handshake-rate-per-ip is set", c.HandshakeBurstPerIP)
	}
	if err := c.Ingest.validate(c.MaxMessage); err != nil {
		return err
	}
	seen := make(map[string]bool, len(c.Namespaces))
	for i, ns := range c.Namespaces {
		field := fmt.Sprintf("namespaces[%d]", i)
		switch {
		case !validNamespace(ns.Name):
			return bad(field+".name", "%q is not 1-32 bytes of [a-z0-9_-]", ns.Name)
		case seen[ns.Name]:
			return bad(field+".name", "%q appears twice", ns.Name)
		case ns.HistorySize < 0:
			return bad(field+".history_size", "%d is negative", ns.HistorySize)
		case ns.HistorySize > 0 && ns.HistoryTTL <= 0:
			return bad(field+".history_ttl", "must be positive when history_size is set")
		}
		seen[ns.Name] = true
	}
	return nil
}

func validNamespace(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
