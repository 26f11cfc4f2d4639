package bench

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestAgainstWsedge builds the real wsedge binary, starts `serve --echo`
// and a broadcast `serve` on 127.0.0.1:0 and runs every mode through the
// real CLI path's library entry point.
func TestAgainstWsedge(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs wsedge")
	}
	bin, out := buildBinary(t, "..", "./cmd/wsedge", "wsedge")
	if bin == "" {
		t.Fatalf("wsedge does not build:\n%s", out)
	}
	echo := startServer(t, bin, "serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--echo")
	// Broadcast runs publish up to a few thousand commands a second from
	// one connection, past the server's default per-connection command
	// rate (1,000/s): benchmark servers turn it off.
	bcast := startServer(t, bin, "serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--command-rate", "0")
	checkModes(t, echo, bcast)
	t.Run("broadcast channels", func(t *testing.T) {
		// 31 subscribers over 3 channels (11, 10, 10): offsets and sequence
		// numbers are per channel, and the accounting must still add up.
		cfg := Defaults()
		cfg.Mode, cfg.URL, cfg.Duration = ModeBroadcast, "ws://"+bcast.ws+"/ws", 700*time.Millisecond
		cfg.Conns, cfg.Channels, cfg.Rate, cfg.Size, cfg.Procs = 31, 3, 20, 64, 2
		r := benchRun(t, cfg)
		s := r.Stats
		if s.Subscribed != 31 || s.Errors != 0 || s.Dropped != 0 || r.Published != s.Sent || r.Published < 3*10 {
			t.Fatalf("broadcast: published %d of %d sent, %+v", r.Published, s.Sent, s)
		}
		// Each channel got Published/3 publishes, give or take one.
		if d := r.Expected - r.Published*31/3; d < -31 || d > 31 {
			t.Fatalf("expected %d deliveries for %d publishes over 3 channels", r.Expected, r.Published)
		}
		if s.Unique != r.Expected || r.Missing != 0 || s.Duplicates != 0 || s.OutOfOrder != 0 {
			t.Fatalf("deliveries: expected %d unique %d missing %d dup %d ooo %d",
				r.Expected, s.Unique, r.Missing, s.Duplicates, s.OutOfOrder)
		}
		// The per-second timeline accounts for every delivery.
		var sum int64
		for _, p := range r.Timeline {
			sum += p.Received
		}
		if sum != s.Received {
			t.Fatalf("timeline holds %d deliveries of %d: %+v", sum, s.Received, r.Timeline)
		}
	})
	t.Run("broadcast slow", func(t *testing.T) {
		// 5 subscribers that never read, against a 16 KiB outbound bound:
		// the server closes them with 1013 while the 10 others get every
		// publish in order.
		small := startServer(t, bin, "serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--max-outbound-bytes", "16384", "--command-rate", "0")
		cfg := Defaults()
		cfg.Mode, cfg.URL, cfg.Duration, cfg.ServerPID = ModeBroadcast, "ws://"+small.ws+"/ws", time.Second, small.pid
		cfg.ServerMetrics = "http://" + small.admin + "/metrics"
		cfg.Conns, cfg.Slow, cfg.Channels, cfg.Rate, cfg.Size = 10, 5, 2, 1000, 4000
		r := benchRun(t, cfg)
		s := r.Stats
		if s.SlowSubscribed != 5 || s.SlowClosed != 5 || s.SlowCloseCode != 1013 {
			t.Fatalf("slow: %d subscribed, %d closed, last code %d", s.SlowSubscribed, s.SlowClosed, s.SlowCloseCode)
		}
		if s.Subscribed != 10 || s.Dropped != 0 || s.Errors != 0 || r.Published != s.Sent ||
			r.Missing != 0 || s.Unique != r.Expected || s.Duplicates != 0 || s.OutOfOrder != 0 {
			t.Fatalf("others: published %d missing %d %+v", r.Published, r.Missing, s)
		}
		if sv := r.Server; sv.RSSReady <= 0 || sv.RSSPeak < sv.RSSReady || sv.RSSDrained <= 0 || sv.SlowClosed != 5 {
			t.Fatalf("server RSS: %+v", sv)
		}
	})

	t.Run("cli", func(t *testing.T) {
		// The command line end to end: flags, child processes, JSON output.
		plot := filepath.Join(t.TempDir(), "latency.png")
		cmd := exec.Command(bin, "bench", "echo", "--url", "ws://"+echo.ws+"/ws", "--conns", "20",
			"--procs", "2", "--rate", "10", "--size", "64", "--duration", "500ms", "--json", "--plot", plot)
		b, err := cmd.Output()
		if err != nil {
			t.Fatalf("wsedge bench: %v\n%s", err, b)
		}
		rs, err := ReadResults(bytes.NewReader(b))
		if err != nil || len(rs) != 1 {
			t.Fatalf("reading --json output: %v (%d results)\n%s", err, len(rs), b)
		}
		r := rs[0]
		if r.Procs != 2 || r.Stats.Connected != 20 || r.Missing != 0 || r.Stats.Errors != 0 || r.Latency.Count == 0 {
			t.Fatalf("cli result: %+v", r)
		}
		png, err := os.ReadFile(plot)
		if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
			t.Fatalf("--plot wrote no PNG: %v", err)
		}
	})
}
