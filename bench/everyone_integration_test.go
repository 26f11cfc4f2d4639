package bench

import (
	"testing"
	"time"
)

// TestEveryoneAgainstWsedge runs the issue-16 shape at a small scale against
// the real wsedge binary: tokens per connection with a personal channel
// subscribed by the server, shared channels and the everyone channel,
// heartbeats during the hold (a 1 s ping interval, so a 3 s idle timeout
// would drop any client that does not answer), the node sampled at start,
// ready and end, then drained by SIGTERM with every client counting its
// disconnect push and close 1001.
func TestEveryoneAgainstWsedge(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs wsedge")
	}
	bin, out := buildBinary(t, "..", "./cmd/wsedge", "wsedge")
	if bin == "" {
		t.Fatalf("wsedge does not build:\n%s", out)
	}
	secret := writeSecret(t, testSecret)
	srv := startServer(t, bin, "serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
		"--auth-secret-file", secret, "--ping-interval", "1s", "--idle-timeout", "3s", "--drain-grace", "500ms")
	cfg := Defaults()
	cfg.Mode, cfg.URL, cfg.Conns, cfg.Procs = ModeBroadcast, "ws://"+srv.ws+"/ws", 60, 2
	cfg.Channel, cfg.Channels, cfg.Rate, cfg.Size = "bench:room", 3, 2, 64
	cfg.AllChannel, cfg.AllEvery = "bench:all", 500*time.Millisecond
	cfg.Duration, cfg.SetupTimeout = 2600*time.Millisecond, 30*time.Second
	cfg.Auth.Key, cfg.Auth.Channels, cfg.Auth.Publish = secret, []string{"bench:*"}, []string{"bench:*"}
	cfg.Auth.Subs = []string{"user:{sub}"}
	cfg.NodePIDs, cfg.NodeMetrics = []int{srv.pid}, []string{"http://" + srv.admin + "/metrics"}
	cfg.DrainNodes, cfg.DrainWait = true, 20*time.Second
	r := benchRun(t, cfg)
	s := r.Stats
	// 60 subscribers, the shared channels' publisher and the everyone one.
	const all = 62
	if s.Connected != all || s.Subscribed != 60 || s.ServerSubs != all || s.Errors != 0 || s.Dropped != 0 {
		t.Fatalf("connections: %+v", s)
	}
	if r.Missing != 0 || r.Published < 3 {
		t.Fatalf("shared channels: published %d missing %d", r.Published, r.Missing)
	}
	e := r.Everyone
	if e == nil || e.Subscribed != 60 || e.Published != 5 || e.Sent != 5 || e.Expected != 300 || e.Unique != 300 ||
		e.Missing != 0 || e.ConnsMissing != 0 || e.Duplicates != 0 || e.Latency.Count != 300 {
		t.Fatalf("everyone: %+v", e)
	}
	if len(e.Broadcasts) != 5 || e.LastMax <= 0 || e.LastMax < e.Latency.P50 {
		t.Fatalf("everyone broadcasts %+v, last max %g", e.Broadcasts, e.LastMax)
	}
	for _, b := range e.Broadcasts {
		if b.Deliveries != 60 {
			t.Fatalf("broadcast %d reached %d of 60", b.N, b.Deliveries)
		}
	}
	// Heartbeats: with 1 s of silence before a ping every client got at
	// least one and stayed (it answered, or the 3 s idle timeout would
	// have closed it).
	if s.PingFrames < all || s.PingPushes < all {
		t.Fatalf("heartbeats: %d ping frames, %d ping pushes for %d connections", s.PingFrames, s.PingPushes, all)
	}
	d := r.NodeDrain
	if d == nil || d.Held != all || d.Left != 0 || d.Error != "" || s.DrainPushes != all || s.DrainClean != all || s.DrainOther != 0 {
		t.Fatalf("node drain %+v, stats %+v", d, s)
	}
	c := r.Cluster
	if c == nil || len(c.Nodes) != 1 || c.Nodes[0].RSSReady <= 0 || c.Nodes[0].GoroutinesReady <= 0 || c.Nodes[0].GoroutinesEnd <= 0 || c.RSSEnd <= 0 {
		t.Fatalf("cluster %+v", c)
	}
	if !c.GoroutinesSame {
		t.Errorf("goroutines changed while the connections were held: %+v", c.Nodes[0])
	}
	if r.Kernel == nil || r.Kernel.Ready.TCPInuse < all || r.Opening == nil || r.Opening.PerSecond <= 0 || len(r.OpenTimeline) == 0 {
		t.Fatalf("kernel %+v opening %+v timeline %d points", r.Kernel, r.Opening, len(r.OpenTimeline))
	}
	if !processExited(srv.pid, 10*time.Second) {
		t.Fatal("the node did not exit after its drain")
	}
}

// processExited polls until pid is gone or a zombie.
func processExited(pid int, d time.Duration) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if !processAlive(pid) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}
