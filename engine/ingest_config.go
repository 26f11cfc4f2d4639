package engine

import (
	"fmt"
	"strings"
	"time"

	"github.com/wsedge/wsedge/ingest"
)

// IngestConfig configures the ingest socket and the HTTP publish API
// (docs/INGEST.md, docs/API.md). It is a plain value inside Config.
type IngestConfig struct {
	// Listen is the ingest socket, unix:///path ("" disables ingest).
	Listen string `yaml:"listen"`
	// Group, if set, owns the socket file (mode 0660), so that services
	// in that group may connect.
	Group string `yaml:"group"`
	// Loops is the number of event loops serving ingest connections
	// (0: one). One connection is always served by one loop.
	Loops int `yaml:"loops"`
	// MaxFrame bounds one request frame; a longer length closes the
	// connection (the frame must be buffered whole to be parsed).
	MaxFrame int `yaml:"max_frame"`
	// MaxPayload bounds one publication's payload (0: --max-message).
	MaxPayload int `yaml:"max_payload"`
	// MaxOutbound bounds the responses an ingest connection has not read:
	// over it the server stops reading that connection.
	MaxOutbound int `yaml:"max_outbound"`
	// OverloadWait is how long a publish whose channel's shard inboxes
	// are full waits (the connection not being read meanwhile) before it
	// is answered "overloaded".
	OverloadWait time.Duration `yaml:"overload_wait"`
	// IdemWindow and IdemMax bound the idempotency window: a key is
	// remembered for IdemWindow, and at most IdemMax keys (the oldest go
	// first, counted in wsedge_ingest_idem_evicted_total).
	IdemWindow time.Duration `yaml:"idem_window"`
	IdemMax    int           `yaml:"idem_max"`
	// EventBuffer is how many connection events the node keeps for
	// backends that read the event stream; one that falls further behind
	// is told how many it lost.
	EventBuffer int `yaml:"event_buffer"`
	// APIKey guards the HTTP API on the admin port (Authorization:
	// apikey <key>); empty disables the API. APIKeyFile reads it from a
	// file instead.
	APIKey     string `yaml:"api_key"`
	APIKeyFile string `yaml:"api_key_file"`
}

func defaultIngestConfig() IngestConfig {
	return IngestConfig{
		MaxFrame:     ingest.DefaultFrame,
		MaxOutbound:  1 << 20,
		OverloadWait: time.Second,
		IdemWindow:   2 * time.Minute,
		IdemMax:      1 << 18,
		EventBuffer:  1 << 16,
	}
}

// socketPath returns the path of a unix:// address.
func (c *IngestConfig) socketPath() string {
	return strings.TrimPrefix(c.Listen, "unix://")
}

func (c *IngestConfig) validate(maxMessage int) error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrConfig, field, fmt.Sprintf(format, args...))
	}
	switch {
	case c.Listen != "" && (!strings.HasPrefix(c.Listen, "unix://") || len(c.socketPath()) == 0):
		return bad("ingest", "%q is not unix:///path", c.Listen)
	case len(c.socketPath()) > 107:
		return bad("ingest", "socket path over 107 bytes")
	case c.Loops < 0 || c.Loops > 64:
		return bad("ingest-loops", "%d not in 0..64", c.Loops)
	case c.MaxPayload < 0 || c.MaxPayload > 1<<26:
		return bad("ingest-max-payload", "%d not in 0..64MiB", c.MaxPayload)
	case c.MaxFrame < ingest.HeaderLen+600 || c.MaxFrame > 1<<27:
		return bad("ingest-max-frame", "%d not in %d..128MiB", c.MaxFrame, ingest.HeaderLen+600)
	case c.MaxPayload+1024 > c.MaxFrame:
		return bad("ingest-max-frame", "%d leaves no room for a %d-byte payload and its channel", c.MaxFrame, c.MaxPayload)
	case c.MaxOutbound < 4096:
		return bad("ingest-max-outbound", "%d is under 4096", c.MaxOutbound)
	case c.OverloadWait < 0 || c.OverloadWait > time.Minute:
		return bad("ingest-overload-wait", "%v not in 0..1m", c.OverloadWait)
	case c.IdemWindow < 0:
		return bad("ingest-idem-window", "%v is negative", c.IdemWindow)
	case c.IdemMax < 0 || c.IdemMax > 1<<26:
		return bad("ingest-idem-max", "%d not in 0..67108864", c.IdemMax)
	case c.EventBuffer < 16 || c.EventBuffer > 1<<24:
		return bad("ingest-event-buffer", "%d not in 16..16777216", c.EventBuffer)
	case c.APIKey != "" && len(c.APIKey) < 16:
		return bad("api-key", "shorter than 16 bytes")
	}
	return nil
}

// payloadLimit is the largest payload of one publication: MaxPayload, or
// --max-message as far as a frame holds it.
func (c *IngestConfig) payloadLimit(maxMessage int) int {
	if c.MaxPayload > 0 {
		return c.MaxPayload
	}
	return min(maxMessage, c.MaxFrame-1024)
}
