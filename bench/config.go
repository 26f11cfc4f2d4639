package bench

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Mode selects what a run measures.
type Mode string

// The modes of wsedge bench.
const (
	ModeIdle      Mode = "idle"
	ModeEcho      Mode = "echo"
	ModeBroadcast Mode = "broadcast"
	ModeConnect   Mode = "connect"
	ModeIngest    Mode = "ingest"
)

// Limits that keep a run bounded whatever the flags say.
const (
	MaxConns        = 1_000_000
	MaxProcs        = 64
	MaxDuration     = time.Hour
	MaxPayload      = 1 << 20
	maxConnsPerProc = 19_500 // one process may open 20,000 files here
	MaxChannels     = 100_000
	// slowRcvBuf is the receive buffer of a --slow subscriber, set before
	// connect so the window is small from the start (shrinking it later
	// stalls the connection instead of filling it).
	slowRcvBuf = 4 << 10
	// pubRatePerConn is the publishes per second one publisher connection is
	// given before --publishers 0 (auto) adds another. It is above wsedge's
	// default per-connection command rate (1,000/s): servers under a
	// broadcast benchmark run with --command-rate 0 (BENCHMARKS.md).
	pubRatePerConn = 20_000
)

// Subprotocol is the one the broadcast mode offers.
const Subprotocol = "wsedge.v1.json"

// ErrNotAvailable is returned for modes that exist in the CLI but not yet in
// the tool.
var ErrNotAvailable = errors.New("not available yet")

// Config is one run. Fill it with Defaults, change fields, then Validate.
// It is a plain value: Run copies it and hands each worker its own copy.
type Config struct {
	Mode Mode
	// URL is the WebSocket endpoint, ws://host:port/path (IPv4 only), or
	// several separated by commas (the nodes of a cluster): subscribers
	// of each channel are spread over them in turn.
	URL string
	// PublishURL, when set, is where broadcast publishers connect (another
	// node of a cluster, for cross-node delivery); default the first URL.
	PublishURL string
	// Conns: idle and echo connections, broadcast subscribers, or the
	// number of handshakes in flight in connect mode.
	Conns int
	// Rate: echo messages per second per connection (0 = closed loop);
	// broadcast publishes per second; connect handshakes per second
	// (0 = as fast as the in-flight window allows).
	Rate float64
	// ConnectRate caps new connections per second while opening (0 = no cap).
	ConnectRate float64
	// Size is the echo payload or the publish data size in bytes.
	Size     int
	Duration time.Duration
	// Drain is how long to wait for replies and deliveries after Duration.
	Drain time.Duration
	// SetupTimeout bounds the time to open (and subscribe) all connections.
	SetupTimeout time.Duration
	Channel      string
	// Channels spreads broadcast subscribers round-robin over this many
	// channels (see ChannelName); Rate is then per channel.
	Channels int
	// Publishers is how many publisher connections share the channels
	// (0 = one per pubRatePerConn publishes per second, at most Channels).
	Publishers int
	// Slow adds broadcast subscribers, spread over the channels like the
	// others, that subscribe with a 4 KiB receive buffer and then stop
	// reading until the measured phase ends. They are left out of the
	// delivery accounting and reported on their own.
	Slow int
	// PingRate makes every broadcast subscriber also send the protocol's
	// ping command this many times a second in the measured phase: an echo
	// over a protocol server, timed from send to reply (Result.PingLatency).
	PingRate float64
	// AllChannel, when set, is the "everyone" channel of a broadcast run
	// (everyone.go): every subscriber also subscribes to it, and one
	// publisher connection of its own publishes to it every AllEvery;
	// its deliveries are measured apart from the per-channel ones.
	AllChannel string
	AllEvery   time.Duration
	// Nodes are the server processes of a cluster under test (nodes.go):
	// NodePIDs are read from /proc for RSS, NodeMetrics (admin /metrics
	// URLs) for go_goroutines, at the start of the run, when every
	// connection is ready and at the end of the measured phase.
	NodePIDs    []int
	NodeMetrics []string
	// DrainNodes: after the measured phase and its drain, send SIGTERM to
	// every NodePIDs process and wait up to DrainWait for the servers to
	// close every connection, counting the disconnect pushes (4001) and
	// close codes (1001) the clients get.
	DrainNodes bool
	DrainWait  time.Duration
	// Attack adds hostile clients beside the measured ones (attack.go).
	Attack AttackConfig
	// Auth is how the measured connections authenticate (token.go).
	Auth TokenConfig
	// Protocol makes idle and connect connections offer the subprotocol,
	// which a wsedge server without --echo requires (broadcast always
	// offers it). Implied by a token: only protocol connections
	// authenticate.
	Protocol bool
	// Deflate makes idle and connect connections offer permessage-deflate
	// (as browsers do), to measure what a negotiated connection costs the
	// server. The load generator itself does not inflate, so it is not
	// offered where data flows.
	Deflate bool
	Procs   int
	// Loops is event loops per process.
	Loops int
	// Sources is how many source addresses in 127.0.0.0/8 (from 127.0.0.2)
	// connections are spread over when the target is loopback.
	Sources     int
	AllowRemote bool
	// ServerPID, when set, is read from /proc for RSS and threads.
	ServerPID int
	// ServerMetrics, when set, is an admin /metrics URL read for
	// go_goroutines and process_resident_memory_bytes (sampled every
	// second of the measured phase) and the wsedge_* counters.
	ServerMetrics string
	// RSSBound is the memory bound the server was configured to (bytes),
	// printed beside its RSS peak; 0 prints none.
	RSSBound int64
	// AbortRSS ends the measured phase early, marking the result aborted,
	// once the server's RSS passes it (0: never), so a server that leaks
	// under attack cannot take the shared machine down with it.
	AbortRSS int64
	// Label names the run in summaries and plots (e.g. the server's name).
	Label string
	// Exe is the command that starts a child process; it defaults to this
	// executable with "bench --child".
	Exe []string
}

// Defaults returns a Config with every field set to its default.
func Defaults() Config {
	return Config{
		Mode:         ModeEcho,
		URL:          "ws://127.0.0.1:8080/ws",
		Conns:        100,
		Rate:         10,
		Size:         1024,
		Duration:     10 * time.Second,
		Drain:        5 * time.Second,
		SetupTimeout: 120 * time.Second,
		Channel:      "bench:b1",
		Channels:     1,
		Procs:        1,
		Sources:      200,
		AbortRSS:     4 << 30,
		Attack:       defaultAttack(),
		Auth:         TokenConfig{TTL: time.Hour},
		AllEvery:     10 * time.Second,
		DrainWait:    60 * time.Second,
	}
}

// target is the resolved endpoint.
type target struct {
	ip       [4]byte
	port     int
	host     string // Host header
	path     string
	loopback bool
}

// Validate checks cfg and names the first bad field.
func (cfg *Config) Validate() error {
	switch cfg.Mode {
	case ModeIdle, ModeEcho, ModeBroadcast, ModeConnect:
	case ModeIngest:
		return fmt.Errorf("mode %q: %w (needs the ingest socket)", cfg.Mode, ErrNotAvailable)
	default:
		return fmt.Errorf("mode: unknown %q (idle, echo, broadcast, connect)", cfg.Mode)
	}
	if cfg.Conns < 1 || cfg.Conns > MaxConns {
		return fmt.Errorf("conns: %d out of range 1..%d", cfg.Conns, MaxConns)
	}
	if cfg.Procs < 1 || cfg.Procs > MaxProcs {
		return fmt.Errorf("procs: %d out of range 1..%d", cfg.Procs, MaxProcs)
	}
	if cfg.Channels < 1 || cfg.Channels > MaxChannels {
		return fmt.Errorf("channels: %d out of range 1..%d", cfg.Channels, MaxChannels)
	}
	if cfg.Rate*float64(cfg.Channels) > 1e6 {
		return fmt.Errorf("rate: %g per channel × %d channels exceeds 1e6 publishes/s", cfg.Rate, cfg.Channels)
	}
	if cfg.Publishers < 0 || cfg.Publishers > cfg.Channels {
		return fmt.Errorf("publishers: %d out of range 0..%d (channels)", cfg.Publishers, cfg.Channels)
	}
	if cfg.Slow < 0 || cfg.Slow > MaxConns {
		return fmt.Errorf("slow: %d out of range 0..%d", cfg.Slow, MaxConns)
	}
	if cfg.Mode != ModeBroadcast && (cfg.Channels != 1 || cfg.Slow != 0 || cfg.Publishers != 0 || cfg.PingRate != 0) {
		return fmt.Errorf("channels, publishers, slow, ping-rate: only for broadcast, not %s", cfg.Mode)
	}
	if cfg.PingRate < 0 || cfg.PingRate > 1000 {
		return fmt.Errorf("ping-rate: %g out of range 0..1000", cfg.PingRate)
	}
	if err := cfg.validateEveryone(); err != nil {
		return err
	}
	if err := cfg.validateNodes(); err != nil {
		return err
	}
	if err := cfg.Attack.validate(); err != nil {
		return err
	}
	if err := cfg.Auth.validate(); err != nil {
		return err
	}
	if cfg.Deflate && cfg.Mode != ModeIdle && cfg.Mode != ModeConnect {
		return fmt.Errorf("deflate: only for idle and connect, not %s", cfg.Mode)
	}
	if cfg.Protocol && cfg.Mode != ModeIdle && cfg.Mode != ModeConnect {
		return fmt.Errorf("protocol: only for idle and connect, not %s", cfg.Mode)
	}
	if cfg.Attack.needsChannel() && !strings.Contains(cfg.Channel, ":") {
		return fmt.Errorf("channel: %q is not namespace:name (never-reading and flooding attackers use it)", cfg.Channel)
	}
	all := cfg.Conns + cfg.Slow + cfg.Attack.maxLive()
	if per := (all + cfg.Procs - 1) / cfg.Procs; per > maxConnsPerProc {
		return fmt.Errorf("conns: %d per process (attackers included) exceeds %d (the open-file limit); use --procs %d",
			per, maxConnsPerProc, (all+maxConnsPerProc-1)/maxConnsPerProc)
	}
	if cfg.RSSBound < 0 || cfg.AbortRSS < 0 {
		return fmt.Errorf("server-rss-bound, abort-rss: negative")
	}
	if cfg.Rate < 0 || cfg.Rate > 1e6 {
		return fmt.Errorf("rate: %g out of range 0..1e6", cfg.Rate)
	}
	if cfg.Mode == ModeBroadcast && cfg.Rate == 0 {
		return errors.New("rate: broadcast needs a publish rate > 0")
	}
	if cfg.ConnectRate < 0 {
		return fmt.Errorf("connect-rate: %g is negative", cfg.ConnectRate)
	}
	minSize := 0
	if cfg.Mode == ModeEcho {
		minSize = echoHeader
	}
	if cfg.Size < minSize || cfg.Size > MaxPayload {
		return fmt.Errorf("size: %d out of range %d..%d", cfg.Size, minSize, MaxPayload)
	}
	if cfg.Duration <= 0 || cfg.Duration > MaxDuration {
		return fmt.Errorf("duration: %v out of range (0, %v]", cfg.Duration, MaxDuration)
	}
	if cfg.Drain < 0 || cfg.Drain > time.Minute {
		return fmt.Errorf("drain: %v out of range [0, 1m]", cfg.Drain)
	}
	if cfg.SetupTimeout <= 0 {
		return fmt.Errorf("setup-timeout: %v must be positive", cfg.SetupTimeout)
	}
	if cfg.Mode == ModeBroadcast && !strings.Contains(cfg.Channel, ":") {
		return fmt.Errorf("channel: %q is not namespace:name", cfg.Channel)
	}
	if cfg.Loops < 0 || cfg.Loops > 64 {
		return fmt.Errorf("loops: %d out of range 0..64", cfg.Loops)
	}
	if cfg.Sources < 1 || cfg.Sources > 253 {
		return fmt.Errorf("sources: %d out of range 1..253", cfg.Sources)
	}
	ts, err := cfg.targets()
	if err != nil {
		return err
	}
	for _, t := range ts {
		if !t.loopback && !cfg.AllowRemote {
			return fmt.Errorf("url: %s is not a loopback address; pass --allow-remote to load another host", t.host)
		}
	}
	return nil
}

// targets resolves the URLs, then the publish URL (the first URL's
// target again when there is none).
func (cfg *Config) targets() ([]target, error) {
	var ts []target
	for _, raw := range strings.Split(cfg.URL, ",") {
		t, err := resolveTarget(strings.TrimSpace(raw))
		if err != nil {
			return nil, fmt.Errorf("url %q: %w", raw, err)
		}
		ts = append(ts, t)
	}
	pub := ts[0]
	if cfg.PublishURL != "" {
		t, err := resolveTarget(cfg.PublishURL)
		if err != nil {
			return nil, fmt.Errorf("publish-url: %w", err)
		}
		pub = t
	}
	return append(ts, pub), nil
}

// ChannelName is the name of broadcast channel i (0-based): Channel itself
// when there is one, else Channel-1 … Channel-N (bench:b1-1 …).
func (cfg *Config) ChannelName(i int) string {
	if cfg.Channels <= 1 {
		return cfg.Channel
	}
	return cfg.Channel + "-" + strconv.Itoa(i+1)
}

// offersProtocol reports whether connections of this run offer the
// subprotocol.
func (cfg *Config) offersProtocol() bool {
	switch cfg.Mode {
	case ModeBroadcast:
		return true
	case ModeIdle, ModeConnect:
		return cfg.Protocol || cfg.Auth.any()
	}
	return false
}

// publishers returns the publisher connections of a broadcast run.
func (cfg *Config) publishers() int {
	if cfg.Publishers > 0 {
		return cfg.Publishers
	}
	n := int(math.Ceil(cfg.Rate * float64(cfg.Channels) / pubRatePerConn))
	return max(1, min(n, cfg.Channels))
}

// loops returns the event loops per process.
func (cfg *Config) loops() int {
	if cfg.Loops > 0 {
		return cfg.Loops
	}
	n := runtime.NumCPU() / cfg.Procs
	if n < 1 {
		n = 1
	}
	return n
}

func resolveTarget(raw string) (target, error) {
	var t target
	u, err := url.Parse(raw)
	if err != nil {
		return t, err
	}
	if u.Scheme != "ws" {
		return t, fmt.Errorf("scheme %q: only ws:// is supported", u.Scheme)
	}
	host, portStr, err := net.SplitHostPort(u.Host)
	if err != nil {
		return t, err
	}
	ips, err := net.LookupIP(host)
	if err != nil {
		return t, err
	}
	var ip4 net.IP
	for _, ip := range ips {
		if v := ip.To4(); v != nil {
			ip4 = v
			break
		}
	}
	if ip4 == nil {
		return t, fmt.Errorf("host %q has no IPv4 address", host)
	}
	port, err := net.LookupPort("tcp", portStr)
	if err != nil {
		return t, err
	}
	copy(t.ip[:], ip4)
	t.port = port
	t.host = u.Host
	t.path = u.RequestURI()
	if u.Path == "" {
		t.path = "/"
	}
	t.loopback = ip4.IsLoopback()
	return t, nil
}

// ErrBadSize is returned by ParseBytes.
var ErrBadSize = errors.New("not a byte count (e.g. 512MiB, 4G, 65536)")

// ParseBytes reads a byte count: a whole number with an optional unit K,
// M or G, powers of 1024 whether written K, KB or KiB (any case).
func ParseBytes(s string) (int64, error) {
	t := strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "B")
	if n := len(t); n >= 2 && t[n-1] == 'I' && strings.IndexByte("KMG", t[n-2]) >= 0 {
		t = t[:n-1]
	}
	shift := 0
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			shift = 10
		case 'M':
			shift = 20
		case 'G':
			shift = 30
		}
		if shift > 0 {
			t = t[:n-1]
		}
	}
	v, err := strconv.ParseInt(strings.TrimSpace(t), 10, 64)
	if err != nil || v < 0 || v > math.MaxInt64>>shift {
		return 0, fmt.Errorf("%q: %w", s, ErrBadSize)
	}
	return v << shift, nil
}
