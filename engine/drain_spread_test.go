package engine

import (
	"strings"
	"testing"
	"time"
)

// TestDrainReconnectDelaySpread: a drain's disconnect pushes name a
// reconnect delay drawn over DrainReconnectWindow, different per client,
// and none at all when the window is 0.
func TestDrainReconnectDelaySpread(t *testing.T) {
	for _, tc := range []struct {
		name   string
		window time.Duration
	}{
		{"window 2s", 2 * time.Second},
		{"no window", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := protoServer(t, func(c *Config) { c.DrainReconnectWindow = tc.window })
			const n = 40
			clients := make([]*pclient, n)
			for i := range clients {
				clients[i] = dialProto(t, s.Addr())
			}
			s.Drain()
			var lo, hi float64 = 1e18, -1
			for i, c := range clients {
				p := c.waitPushes(1, func(m map[string]any) bool { return m["disconnect"] != nil })[0]
				d := p["disconnect"].(map[string]any)
				if d["code"] != float64(4001) || d["reconnect"] != true {
					t.Fatalf("client %d: %v, want code 4001 with reconnect", i, d)
				}
				delay, has := d["delay"].(float64)
				if tc.window == 0 {
					if has || d["delay"] != nil {
						t.Fatalf("client %d: delay %v without a window", i, d["delay"])
					}
					continue
				}
				if !has || delay < 1 || delay > float64(tc.window/time.Millisecond) {
					t.Fatalf("client %d: delay %v, want 1..%d ms", i, d["delay"], tc.window/time.Millisecond)
				}
				lo, hi = min(lo, delay), max(hi, delay)
			}
			// 40 uniform draws over 2,000 ms span less than half of it
			// with probability about 40·0.5^39: never, unless they are
			// not spread.
			if tc.window > 0 && hi-lo < float64(tc.window/time.Millisecond)/2 {
				t.Fatalf("delays span %v..%v ms, want them spread over the %v window", lo, hi, tc.window)
			}
		})
	}
}

// TestDrainReconnectWindowValidated names the field of a bad window.
func TestDrainReconnectWindowValidated(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DrainReconnectWindow = -time.Second
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "drain-reconnect-window") {
		t.Fatalf("Validate: %v, want an error naming drain-reconnect-window", err)
	}
	cfg.DrainReconnectWindow = 0
	if err := cfg.Validate(); err != nil {
		t.Fatalf("window 0 (off): %v", err)
	}
}
