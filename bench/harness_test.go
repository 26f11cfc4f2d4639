package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// server is a server process under test.
type server struct {
	ws, admin string
	pid       int
}

// buildBinary builds the main package in dir (relative to this package)
// into a temp dir. It returns "" and the build output if that fails.
func buildBinary(t *testing.T, dir, pkg, name string) (string, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = dir
	b, err := cmd.CombinedOutput()
	if err != nil {
		return "", string(b)
	}
	return out, ""
}

// startServer runs bin with args and waits for its "listening" JSON log
// line on stderr. The process is killed at the end of the test.
func startServer(t *testing.T, bin string, args ...string) server {
	t.Helper()
	if len(args) > 0 && args[0] == "serve" && !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--auth-") }) {
		// Without a key of the test's own the load generator presents no
		// token: benchmark servers run without authentication
		// (BENCHMARKS.md says so).
		args = append(args, "--insecure-no-auth")
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "WSEDGE_DEV_SECRET_FILE="+filepath.Join(t.TempDir(), "dev-secret"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	})
	found := make(chan server, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sent := false
		for sc.Scan() {
			var line struct {
				Msg   string `json:"msg"`
				WS    string `json:"ws"`
				Admin string `json:"admin"`
			}
			if !sent && json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" && line.WS != "" {
				found <- server{ws: line.WS, admin: line.Admin, pid: cmd.Process.Pid}
				sent = true
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	select {
	case s := <-found:
		return s
	case <-time.After(20 * time.Second):
		t.Fatalf("%s %v: no listening line within 20s", bin, args)
	}
	return server{}
}

// benchRun runs one bounded bench in this process (children are this test
// binary, see TestMain) and fails the test on error.
func benchRun(t *testing.T, cfg Config) *Result {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Procs > 1 {
		t.Setenv(childEnv, "1")
		cfg.Exe = []string{os.Args[0]}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := Run(ctx, cfg, nil)
	if err != nil {
		t.Fatalf("%s: %v", cfg.Mode, err)
	}
	var sb strings.Builder
	res.WriteSummary(&sb)
	t.Log("\n" + sb.String())
	return res
}

// checkModes runs a short bench of every mode against an echo server and a
// broadcast server and checks the figures are sane.
func checkModes(t *testing.T, echo, bcast server) {
	base := Defaults()
	base.Duration = 700 * time.Millisecond
	base.Drain = 5 * time.Second
	base.SetupTimeout = 30 * time.Second

	t.Run("echo", func(t *testing.T) {
		cfg := base
		cfg.Mode, cfg.URL = ModeEcho, "ws://"+echo.ws+"/ws"
		cfg.Conns, cfg.Rate, cfg.Size, cfg.Procs = 50, 20, 256, 2
		cfg.ServerPID = echo.pid
		r := benchRun(t, cfg)
		s := r.Stats
		if s.Connected != 50 || s.ConnectFailed != 0 || s.Dropped != 0 || s.Errors != 0 {
			t.Fatalf("connections: %+v", s)
		}
		// Open-loop pacing: every connection sends at its rate for the
		// measured phase, give or take one message each.
		want := 50 * 20 * r.Duration
		if math.Abs(float64(s.Sent)-want) > 0.1*want+50 || s.Received != s.Sent || r.Missing != 0 {
			t.Fatalf("sent %d (want %.0f ± 10%%) received %d missing %d", s.Sent, want, s.Received, r.Missing)
		}
		if r.Latency.Count != s.Received || r.Latency.P50 <= 0 || r.Latency.P99 < r.Latency.P50 || r.Latency.Max < r.Latency.P99 {
			t.Fatalf("latency: %+v", r.Latency)
		}
		if r.Server == nil || r.Server.RSSAfter <= 0 || r.Server.Threads < 1 {
			t.Fatalf("server stats: %+v", r.Server)
		}
	})
	t.Run("echo closed loop", func(t *testing.T) {
		cfg := base
		cfg.Mode, cfg.URL = ModeEcho, "ws://"+echo.ws+"/ws"
		cfg.Conns, cfg.Rate, cfg.Size = 10, 0, 64
		r := benchRun(t, cfg)
		if r.Stats.Errors != 0 || r.Missing != 0 || r.Stats.Received < 100 {
			t.Fatalf("closed loop: %+v missing %d", r.Stats, r.Missing)
		}
	})
	t.Run("idle", func(t *testing.T) {
		cfg := base
		cfg.Mode, cfg.URL = ModeIdle, "ws://"+echo.ws+"/ws"
		cfg.Conns, cfg.Procs, cfg.Duration = 300, 2, 300*time.Millisecond
		cfg.ServerPID = echo.pid
		r := benchRun(t, cfg)
		if r.Stats.Connected != 300 || r.Stats.Open != 300 || r.Stats.ConnectFailed != 0 || r.Stats.Dropped != 0 {
			t.Fatalf("idle: %+v", r.Stats)
		}
		if r.ConnectTime.Count != 300 || r.Server.RSSAfter < r.Server.RSSBefore/2 {
			t.Fatalf("connect times %+v server %+v", r.ConnectTime, r.Server)
		}
	})
	t.Run("connect", func(t *testing.T) {
		cfg := base
		cfg.Mode, cfg.URL = ModeConnect, "ws://"+echo.ws+"/ws"
		cfg.Conns, cfg.Rate = 8, 0
		r := benchRun(t, cfg)
		if r.Stats.Handshakes < 20 || r.Stats.ConnectFailed != 0 || r.Stats.Errors != 0 || r.HandshakesPerSec <= 0 {
			t.Fatalf("connect: %+v %.0f/s", r.Stats, r.HandshakesPerSec)
		}
		if r.Latency.Count != r.Stats.Handshakes {
			t.Fatalf("upgrade samples %d, handshakes %d", r.Latency.Count, r.Stats.Handshakes)
		}
	})
	t.Run("broadcast", func(t *testing.T) {
		cfg := base
		cfg.Mode, cfg.URL = ModeBroadcast, "ws://"+bcast.ws+"/ws"
		cfg.Conns, cfg.Rate, cfg.Size, cfg.Procs = 100, 20, 64, 2
		r := benchRun(t, cfg)
		s := r.Stats
		if s.Subscribed != 100 || s.Errors != 0 || s.Dropped != 0 {
			t.Fatalf("broadcast: %+v", s)
		}
		if r.Published < 5 || r.Published != s.Sent {
			t.Fatalf("published %d of %d sent", r.Published, s.Sent)
		}
		if r.Expected != r.Published*100 || s.Unique != r.Expected || r.Missing != 0 || s.Duplicates != 0 || s.OutOfOrder != 0 {
			t.Fatalf("deliveries: expected %d unique %d missing %d dup %d ooo %d",
				r.Expected, s.Unique, r.Missing, s.Duplicates, s.OutOfOrder)
		}
		if r.Latency.Count != s.Received {
			t.Fatalf("latency samples %d, deliveries %d", r.Latency.Count, s.Received)
		}
	})
}
