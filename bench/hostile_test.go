package bench

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestHostileAgainstWsedge runs every kind of attacker beside measured
// subscribers that ping, against a real `wsedge serve` built from this
// tree, for two seconds and a few hundred connections. It checks the
// accounting (every attacker ends with exactly one outcome) and what any
// sound server must answer; it does not judge the server's memory.
func TestHostileAgainstWsedge(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs wsedge")
	}
	bin, out := buildBinary(t, "..", "./cmd/wsedge", "wsedge")
	if bin == "" {
		t.Fatalf("wsedge does not build:\n%s", out)
	}
	srv := startServer(t, bin, "serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--handshake-timeout", "300ms")
	metrics := "http://" + srv.admin + "/metrics"
	base := Defaults()
	base.Mode, base.URL, base.ServerPID, base.ServerMetrics = ModeBroadcast, "ws://"+srv.ws+"/ws", srv.pid, metrics
	base.Conns, base.Rate, base.Size, base.PingRate = 100, 10, 64, 10
	base.Duration, base.SetupTimeout = 2*time.Second, 30*time.Second
	base.AbortRSS = 1 << 30 // a guard: the test judges accounting, not memory

	t.Run("every kind", func(t *testing.T) {
		cfg := base
		cfg.Procs = 2
		a := &cfg.Attack
		// limit 0 asks only for the channel's position: small replies, so
		// a server that queues them all does not take much memory here.
		a.Slowloris, a.NoRead, a.Flood, a.HistoryLimit = 20, 10, 1, 0
		a.Oversize, a.Overflow, a.Churn, a.StreamMax = 5, 5, 50, 64<<10
		a.Hold = time.Second // never-readers are replaced once
		r := benchRun(t, cfg)
		s := r.Stats
		if r.Aborted != "" || r.Server.Exited {
			t.Fatalf("aborted %q, server exited %v", r.Aborted, r.Server.Exited)
		}
		// The measured subscribers got every ping reply and delivery.
		if s.Subscribed != 100 || s.Pings < 100*10 || s.Pongs != s.Pings || s.PingErrors != 0 ||
			r.Missing != 0 || s.Dropped != 0 || s.Errors != 0 || r.PingLatency == nil || r.PingLatency.Count != s.Pongs {
			t.Fatalf("measured: pings %d ok %d errors %d, missing %d, %+v", s.Pings, s.Pongs, s.PingErrors, r.Missing, s)
		}
		kinds := map[string]*AttackStats{}
		for i := range r.Attacks {
			at := &r.Attacks[i]
			kinds[at.Kind] = at
			if at.Dialed == 0 || at.outcomeTotal() != at.Dialed {
				t.Fatalf("%s: dialed %d, outcomes %v", at.Kind, at.Dialed, at.Outcomes)
			}
			for o := range at.Outcomes {
				if strings.HasPrefix(o, "error") || strings.HasPrefix(o, "http") {
					t.Fatalf("%s: outcome %q in %v", at.Kind, o, at.Outcomes)
				}
			}
		}
		if len(kinds) != numKinds {
			t.Fatalf("%d kinds reported: %v", len(kinds), r.Attacks)
		}
		// Closed at the 300 ms handshake deadline, never upgraded, replaced.
		if sl := kinds["slowloris"]; sl.Outcomes["eof"] == 0 || sl.Upgraded != 0 || sl.Dialed <= 20 {
			t.Fatalf("slowloris: %+v", sl)
		}
		if nr := kinds["never-read"]; nr.Upgraded < 10 || nr.Dialed <= 10 {
			t.Fatalf("never-read: %+v", nr)
		}
		if fl := kinds["history-flood"]; fl.Upgraded < 1 || fl.Requests < 1 {
			t.Fatalf("history-flood: %+v", fl)
		}
		if ov := kinds["oversize"]; ov.Outcomes["close 1009"] == 0 {
			t.Fatalf("oversize: %+v", ov)
		}
		if ch := kinds["churn"]; ch.Outcomes["close 1000"] < 50 || ch.Upgraded < 50 {
			t.Fatalf("churn: %+v", ch)
		}
		if of := kinds["overflow"]; of.Upgraded < 1 {
			t.Fatalf("overflow: %+v", of)
		}
		sv := r.Server
		if sv.Samples < 1 || sv.GoroutinesMin < 1 || sv.GoroutinesMax < sv.GoroutinesMin || sv.RSSPeak <= 0 ||
			sv.Counters[`wsedge_handshakes_total{result="timeout"}`] < 1 || sv.Counters["wsedge_protocol_errors_total"] < 1 {
			t.Fatalf("server: %+v", sv)
		}
	})

	t.Run("abort on RSS", func(t *testing.T) {
		cfg := base
		cfg.Conns, cfg.PingRate, cfg.Duration, cfg.AbortRSS = 10, 0, time.Minute, 1
		r := benchRun(t, cfg)
		if !strings.Contains(r.Aborted, "--abort-rss") || r.Duration > 10 {
			t.Fatalf("aborted %q after %.1fs", r.Aborted, r.Duration)
		}
	})

	t.Run("server exits", func(t *testing.T) {
		// The server is killed once the measured phase runs (the progress
		// line says so); the run ends early and says why.
		doomed := startServer(t, bin, "serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0")
		cfg := base
		cfg.URL, cfg.ServerPID, cfg.ServerMetrics = "ws://"+doomed.ws+"/ws", doomed.pid, "http://"+doomed.admin+"/metrics"
		cfg.Conns, cfg.Duration, cfg.Drain = 10, time.Minute, time.Second
		killer := &killOnRun{pid: doomed.pid}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		r, err := Run(ctx, cfg, killer)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(r.Aborted, "exited") || !r.Server.Exited || r.Duration > 30 {
			t.Fatalf("aborted %q, exited %v, after %.1fs", r.Aborted, r.Server.Exited, r.Duration)
		}
	})

	t.Run("cli", func(t *testing.T) {
		// The flags end to end: a summary on stdout, the JSON in a file.
		file := filepath.Join(t.TempDir(), "r.json")
		cmd := exec.Command(bin, "bench", "broadcast", "--url", base.URL, "--conns", "20", "--rate", "5", "--size", "64",
			"--ping-rate", "5", "--duration", "1s", "--procs", "2", "--slowloris", "4", "--churn", "20", "--attack-hold", "2s",
			"--server-metrics", metrics, "--server-rss-bound", "1GiB", "--abort-rss", "2GiB", "--json-file", file, "--quiet")
		b, err := cmd.Output()
		if err != nil {
			t.Fatalf("wsedge bench: %v\n%s", err, b)
		}
		if !bytes.Contains(b, []byte("attack      slowloris")) || !bytes.Contains(b, []byte("success     pings")) {
			t.Fatalf("summary lacks the attack and success lines:\n%s", b)
		}
		rs, err := ReadResultFiles(file)
		if err != nil || len(rs) != 1 {
			t.Fatalf("reading --json-file: %v (%d results)", err, len(rs))
		}
		r := rs[0]
		if r.PingRate != 5 || r.Stats.Pongs == 0 || len(r.Attacks) != 2 || r.Server == nil || r.Server.RSSBound != 1<<30 || r.Server.Samples < 1 {
			t.Fatalf("cli result: %+v", r)
		}
	})
}

// killOnRun is a progress writer that kills pid the first time the
// progress line shows the measured phase.
type killOnRun struct {
	pid  int
	once sync.Once
}

func (k *killOnRun) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(" run ")) {
		k.once.Do(func() { _ = syscall.Kill(k.pid, syscall.SIGKILL) })
	}
	return len(p), nil
}
