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

	// AllowedOrigins lists Origin header values accepted at the handshake;
	// empty accepts any (and requests without Origin are always accepted:
	// only browsers send it).
	AllowedOrigins []string `yaml:"allowed_origins"`
}

// DefaultConfig returns the configuration `wsedge serve` runs with when
// nothing is set.
func DefaultConfig() Config {
	return Config{
		Listen:           "127.0.0.1:8080",
		Admin:            "127.0.0.1:9090",
		Path:             "/ws",
		MaxMessage:       64 << 10,
		PingInterval:     25 * time.Second,
		IdleTimeout:      60 * time.Second,
		HandshakeTimeout: 5 * time.Second,
		CloseTimeout:     2 * time.Second,
		DrainGrace:       10 * time.Second,
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
	}
	return nil
}
