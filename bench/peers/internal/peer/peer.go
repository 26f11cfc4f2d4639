// Package peer is what the peer servers share: flags, the "listening" log
// line wsedge bench looks for, the admin listener, and the broadcast hub that
// speaks the subset of wsedge.v1.json the bench uses (subscribe, publish,
// pushes with a per-channel offset).
//
// Each peer binary owns its connections its own way; the hub is safe for
// concurrent use by any number of connection goroutines or event loops.
package peer

import (
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync"
)

// Subprotocol is the one broadcast clients offer.
const Subprotocol = "wsedge.v1.json"

// Flags are the command line every peer accepts.
type Flags struct {
	Listen string
	Admin  string
	Echo   bool
}

// ParseFlags parses os.Args for a peer named name.
func ParseFlags(name string) Flags {
	var f Flags
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	fs.StringVar(&f.Listen, "listen", "127.0.0.1:8080", "WebSocket listen address (path /ws)")
	fs.StringVar(&f.Admin, "admin", "127.0.0.1:0", "admin listen address (/metrics, /healthz)")
	fs.BoolVar(&f.Echo, "echo", false, "echo every data message instead of the broadcast protocol")
	_ = fs.Parse(os.Args[1:])
	return f
}

// Logger is the JSON logger on stderr every peer uses.
var Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))

// ServeAdmin starts the admin listener: /metrics reports go_goroutines like
// the wsedge admin port does, /healthz answers ok. It returns its address.
func ServeAdmin(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "go_goroutines %d\n", runtime.NumGoroutine())
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	go func() { _ = http.Serve(ln, mux) }()
	return ln.Addr().String(), nil
}

// Listening logs the line wsedge bench and bench/peers/run.sh parse.
func Listening(name, ws, admin string, echo bool) {
	Logger.Info("listening", "peer", name, "ws", ws, "admin", admin, "echo", echo, "pid", os.Getpid())
}

// Fatal logs err and exits.
func Fatal(err error) {
	Logger.Error("fatal", "err", err.Error())
	os.Exit(1)
}

// Sub is a connection the hub can push to. Send must be safe to call from
// any goroutine; it may drop the message if the connection is gone.
type Sub interface {
	Send(msg []byte)
}

type channel struct {
	mu     sync.Mutex
	offset uint64
	subs   map[Sub]struct{}
}

// Hub maps channels to subscribers.
type Hub struct {
	mu    sync.Mutex
	chans map[string]*channel
	// per-connection channel lists, for Remove
	member map[Sub][]*channel
}

// NewHub returns an empty hub.
func NewHub() *Hub {
	return &Hub{chans: make(map[string]*channel), member: make(map[Sub][]*channel)}
}

func (h *Hub) channel(name string) *channel {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.chans[name]
	if c == nil {
		c = &channel{subs: make(map[Sub]struct{})}
		h.chans[name] = c
	}
	return c
}

type command struct {
	ID      *int64          `json:"id"`
	Op      string          `json:"op"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
}

// Handle runs one client command from s and sends its reply to s. Publishes
// are fanned out under the channel's lock so every subscriber sees offsets
// in order.
func (h *Hub) Handle(s Sub, msg []byte) {
	var cmd command
	if err := json.Unmarshal(msg, &cmd); err != nil || cmd.ID == nil {
		s.Send(errorReply(0, 400, "bad command"))
		return
	}
	id := *cmd.ID
	switch cmd.Op {
	case "subscribe":
		if cmd.Channel == "" {
			s.Send(errorReply(id, 400, "channel required"))
			return
		}
		c := h.channel(cmd.Channel)
		c.mu.Lock()
		c.subs[s] = struct{}{}
		off := c.offset
		c.mu.Unlock()
		h.mu.Lock()
		h.member[s] = append(h.member[s], c)
		h.mu.Unlock()
		s.Send(okReply(id, off))
	case "publish":
		if cmd.Channel == "" || len(cmd.Data) == 0 {
			s.Send(errorReply(id, 400, "channel and data required"))
			return
		}
		c := h.channel(cmd.Channel)
		c.mu.Lock()
		c.offset++
		off := c.offset
		push := make([]byte, 0, len(cmd.Channel)+len(cmd.Data)+48)
		push = append(push, `{"channel":`...)
		push = strconv.AppendQuote(push, cmd.Channel)
		push = append(push, `,"offset":`...)
		push = strconv.AppendUint(push, off, 10)
		push = append(push, `,"data":`...)
		push = append(push, cmd.Data...)
		push = append(push, '}')
		for sub := range c.subs {
			sub.Send(push)
		}
		c.mu.Unlock()
		s.Send(okReply(id, off))
	default:
		s.Send(errorReply(id, 400, "unknown op"))
	}
}

// Remove forgets s in every channel it joined.
func (h *Hub) Remove(s Sub) {
	h.mu.Lock()
	cs := h.member[s]
	delete(h.member, s)
	h.mu.Unlock()
	for _, c := range cs {
		c.mu.Lock()
		delete(c.subs, s)
		c.mu.Unlock()
	}
}

func okReply(id int64, off uint64) []byte {
	b := append([]byte(`{"id":`), strconv.FormatInt(id, 10)...)
	b = append(b, `,"ok":true,"result":{"offset":`...)
	b = strconv.AppendUint(b, off, 10)
	return append(b, `,"epoch":"peer"}}`...)
}

func errorReply(id int64, code int, msg string) []byte {
	return fmt.Appendf(nil, `{"id":%d,"error":{"code":%d,"message":%q}}`, id, code, msg)
}
