package engine

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/wsedge/wsedge/frame"
)

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines(msg string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range bytes.Split(s.b.Bytes(), []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(l, &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

func TestConnectionLog(t *testing.T) {
	var sink syncBuffer
	s := startServerLog(t, nil, slog.New(slog.NewJSONHandler(&sink, nil)))
	c := handshake(t, s.Addr())
	c.send(masked(true, frame.OpText, []byte("one")))
	c.expectFrame(frame.OpText, "one")
	c.send(masked(true, frame.OpBinary, []byte("two")))
	c.expectFrame(frame.OpBinary, "two")
	c.send(closeFrame(frame.CloseNormal, ""))
	c.expectClose(frame.CloseNormal)
	var line map[string]any
	checkFor(t, 5*time.Second, func() error {
		got := sink.lines("connection closed")
		if len(got) != 1 {
			return fmt.Errorf("%d connection summaries, want 1", len(got))
		}
		line = got[0]
		return nil
	})
	want := map[string]any{
		"msgs_in":    float64(2),
		"msgs_out":   float64(2),
		"close_code": float64(1000),
		"closed_by":  "client",
	}
	for k, v := range want {
		if line[k] != v {
			t.Fatalf("summary %v: %s = %v, want %v", line, k, line[k], v)
		}
	}
	if line["bytes_in"].(float64) < 6 || line["bytes_out"].(float64) < 6 || line["remote"] == "" {
		t.Fatalf("summary %v lacks bytes or remote", line)
	}
}

// TestConnectionLogSampled: a mass disconnect logs a bounded number of
// summaries and one count of the rest; nothing goes unaccounted.
func TestConnectionLogSampled(t *testing.T) {
	var sink syncBuffer
	s := startServerLog(t, func(c *Config) { c.Loops = 1 }, slog.New(slog.NewJSONHandler(&sink, nil)))
	const n = 300
	conns := make([]*rawClient, n)
	for i := range conns {
		conns[i] = handshake(t, s.Addr())
	}
	for _, c := range conns {
		c.nc.Close()
	}
	checkFor(t, 10*time.Second, func() error {
		logged := len(sink.lines("connection closed"))
		suppressed := 0
		for _, l := range sink.lines("connection logs suppressed") {
			suppressed += int(l["count"].(float64))
		}
		if logged+suppressed != n {
			return fmt.Errorf("%d logged + %d suppressed, want %d", logged, suppressed, n)
		}
		if suppressed == 0 {
			return fmt.Errorf("all %d summaries logged, none sampled", logged)
		}
		return nil
	})
}
