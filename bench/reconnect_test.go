package bench

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestReconnectStorm drains a real wsedge under 200 clients that then
// dial a second one: every client is counted once disconnected and once
// back, every disconnect push named a delay within the 1 s window, the
// clients waited for it, and the plot draws both runs.
func TestReconnectStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs wsedge")
	}
	bin, out := buildBinary(t, "..", "./cmd/wsedge", "wsedge")
	if bin == "" {
		t.Fatalf("build: %s", out)
	}
	run := func(window string) *ReconnectResult {
		a := startServer(t, bin, "serve", "--listen", "127.0.0.1:0", "--admin", "", "--drain-grace", "0", "--drain-reconnect-window", window)
		b := startServer(t, bin, "serve", "--listen", "127.0.0.1:0", "--admin", "")
		cfg := DefaultReconnect()
		cfg.URL, cfg.To, cfg.ServerPID = "ws://"+a.ws+"/ws", "ws://"+b.ws+"/ws", a.pid
		cfg.Conns, cfg.Window, cfg.Label = 200, 30*time.Second, "window "+window
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		r, err := RunReconnect(ctx, cfg, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		sum := func(xs []int) (n int) {
			for _, x := range xs {
				n += x
			}
			return n
		}
		if r.Back != 200 || r.Lost != 200 || sum(r.Reconnects) != 200 || sum(r.Disconnects) != 200 {
			t.Fatalf("%s: back %d, lost %d, binned %d/%d, want 200 each", r.Label, r.Back, r.Lost, sum(r.Reconnects), sum(r.Disconnects))
		}
		return r
	}
	spread := run("1s")
	if spread.Delayed != 200 || spread.MaxDelayMs <= 0 || spread.MaxDelayMs > 1000 {
		t.Fatalf("%d of 200 pushes named a delay, max %v ms, want all, within 1 s", spread.Delayed, spread.MaxDelayMs)
	}
	// 200 draws over 1 s: the last client waits most of it.
	if spread.LastMs < 500 {
		t.Fatalf("last client back after %v ms: the delays were not honoured", spread.LastMs)
	}
	none := run("0")
	if none.Delayed != 0 {
		t.Fatalf("%d pushes named a delay with the window off", none.Delayed)
	}
	var svg strings.Builder
	if err := PlotReconnectSVG(&svg, []*ReconnectResult{none, spread}, ""); err != nil {
		t.Fatal(err)
	}
	if s := svg.String(); !strings.HasPrefix(s, "<svg") || strings.Count(s, "<polyline") != 2 || !strings.Contains(s, "window 1s") {
		t.Fatalf("plot: %.300s", s)
	}
}
