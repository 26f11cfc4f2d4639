package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A run against a cluster (--node-pids, --node-metrics) reads every node
// at three points: before the first dial (start), when every connection is
// open and subscribed (ready) and at the end of the measured phase (end):
// its RSS from /proc and its goroutines from /metrics. The machine's
// kernel side of the same connections (sockets, TCP memory, slab,
// conntrack entries) is read at the same points, so a reader sees both
// halves of what a connection costs. With --drain-nodes the parent then
// sends SIGTERM to every node once the clients have drained their
// deliveries, and the clients count how each connection ended.

// MaxNodes bounds --node-pids and --node-metrics.
const MaxNodes = 256

// validateNodes checks the cluster fields.
func (cfg *Config) validateNodes() error {
	if len(cfg.NodePIDs) > MaxNodes || len(cfg.NodeMetrics) > MaxNodes {
		return fmt.Errorf("node-pids, node-metrics: at most %d nodes", MaxNodes)
	}
	if len(cfg.NodePIDs) > 0 && len(cfg.NodeMetrics) > 0 && len(cfg.NodePIDs) != len(cfg.NodeMetrics) {
		return fmt.Errorf("node-pids (%d) and node-metrics (%d): one each per node, in the same order",
			len(cfg.NodePIDs), len(cfg.NodeMetrics))
	}
	for _, p := range cfg.NodePIDs {
		if p <= 1 {
			return fmt.Errorf("node-pids: %d is not a server process", p)
		}
	}
	if cfg.DrainNodes && len(cfg.NodePIDs) == 0 {
		return fmt.Errorf("drain-nodes: needs --node-pids (the processes to send SIGTERM)")
	}
	if cfg.DrainWait <= 0 || cfg.DrainWait > 10*time.Minute {
		return fmt.Errorf("drain-wait: %v out of range (0, 10m]", cfg.DrainWait)
	}
	if cfg.DrainNodes && cfg.Mode == ModeConnect {
		return fmt.Errorf("drain-nodes: not for connect mode")
	}
	return nil
}

// NodeStats is one node of the cluster under test; part of a Result. RSS
// in bytes (0: unknown), goroutines -1 when unknown.
type NodeStats struct {
	PID             int    `json:"pid,omitempty"`
	Metrics         string `json:"metrics,omitempty"`
	RSSStart        int64  `json:"rss_start_bytes"`
	RSSReady        int64  `json:"rss_ready_bytes"`
	RSSEnd          int64  `json:"rss_end_bytes"`
	GoroutinesStart int64  `json:"goroutines_start"`
	GoroutinesReady int64  `json:"goroutines_ready"`
	GoroutinesEnd   int64  `json:"goroutines_end"`
	Exited          bool   `json:"exited,omitempty"`
}

// Cluster sums the nodes; part of a Result.
type Cluster struct {
	Nodes []NodeStats `json:"nodes"`
	// RSS of every node together at each point, and per connection open at
	// the end: the growth since start, and the whole.
	RSSStart       int64   `json:"rss_start_bytes"`
	RSSReady       int64   `json:"rss_ready_bytes"`
	RSSEnd         int64   `json:"rss_end_bytes"`
	RSSPerConn     float64 `json:"rss_per_conn_bytes"`
	RSSPerConnFull float64 `json:"rss_full_per_conn_bytes"`
	// GoroutinesSame: every node had as many goroutines at the end of the
	// measured phase as when the connections were ready.
	GoroutinesSame bool `json:"goroutines_same"`
	// Drain (--drain-nodes): seconds from SIGTERM to the last connection
	// the servers closed.
	DrainSeconds float64 `json:"drain_s,omitempty"`
}

// KernelStats is the machine's socket memory at one point; part of a
// Result. From /proc/net/sockstat (TCP line), /proc/meminfo and
// nf_conntrack_count (-1 where the file is missing).
type KernelStats struct {
	TCPInuse      int64 `json:"tcp_inuse"`
	TCPOrphan     int64 `json:"tcp_orphan"`
	TCPTimeWait   int64 `json:"tcp_tw"`
	TCPAlloc      int64 `json:"tcp_alloc"`
	TCPMemPages   int64 `json:"tcp_mem_pages"`
	Slab          int64 `json:"slab_bytes"`
	SUnreclaim    int64 `json:"sunreclaim_bytes"`
	MemAvailable  int64 `json:"mem_available_bytes"`
	ConntrackUsed int64 `json:"conntrack_count"`
}

// Kernel is the kernel's side at the three points of a run.
type Kernel struct {
	Start KernelStats `json:"start"`
	Ready KernelStats `json:"ready"`
	End   KernelStats `json:"end"`
}

func readKernel() KernelStats {
	k := KernelStats{ConntrackUsed: -1}
	if b, err := os.ReadFile("/proc/net/sockstat"); err == nil {
		parseSockstat(b, &k)
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		parseMeminfo(b, &k)
	}
	if b, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_count"); err == nil {
		if v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
			k.ConntrackUsed = v
		}
	}
	return k
}

// parseSockstat reads the line "TCP: inuse N orphan N tw N alloc N mem N".
func parseSockstat(b []byte, k *KernelStats) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != "TCP:" {
			continue
		}
		for i := 1; i+1 < len(f); i += 2 {
			v, err := strconv.ParseInt(f[i+1], 10, 64)
			if err != nil {
				continue
			}
			switch f[i] {
			case "inuse":
				k.TCPInuse = v
			case "orphan":
				k.TCPOrphan = v
			case "tw":
				k.TCPTimeWait = v
			case "alloc":
				k.TCPAlloc = v
			case "mem":
				k.TCPMemPages = v
			}
		}
	}
}

func parseMeminfo(b []byte, k *KernelStats) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "Slab:":
			k.Slab = v << 10
		case "SUnreclaim:":
			k.SUnreclaim = v << 10
		case "MemAvailable:":
			k.MemAvailable = v << 10
		}
	}
}

// node points.
const (
	pointStart = iota
	pointReady
	pointEnd
)

// sampleNodes reads every node at point p, the nodes in parallel (a busy
// node may take a while to answer /metrics).
func sampleNodes(cfg *Config, nodes []NodeStats, p int) {
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := &nodes[i]
			rss, g := int64(0), int64(-1)
			if n.PID > 0 {
				if !processAlive(n.PID) {
					n.Exited = true
				} else if ps, err := readProcStatus(n.PID); err == nil {
					rss = ps.RSS
				}
			}
			if n.Metrics != "" {
				if m, err := readMetrics(n.Metrics, metricRSS, metricGoroutines); err == nil {
					if v, ok := m[metricGoroutines]; ok {
						g = v
					}
					if rss == 0 {
						rss = m[metricRSS]
					}
				}
			}
			switch p {
			case pointStart:
				n.RSSStart, n.GoroutinesStart = rss, g
			case pointReady:
				n.RSSReady, n.GoroutinesReady = rss, g
			case pointEnd:
				n.RSSEnd, n.GoroutinesEnd = rss, g
			}
		}()
	}
	wg.Wait()
}

func newNodes(cfg *Config) []NodeStats {
	n := max(len(cfg.NodePIDs), len(cfg.NodeMetrics))
	if n == 0 {
		return nil
	}
	out := make([]NodeStats, n)
	for i := range out {
		if i < len(cfg.NodePIDs) {
			out[i].PID = cfg.NodePIDs[i]
		}
		if i < len(cfg.NodeMetrics) {
			out[i].Metrics = cfg.NodeMetrics[i]
		}
		out[i].GoroutinesStart, out[i].GoroutinesReady, out[i].GoroutinesEnd = -1, -1, -1
	}
	return out
}

// summarizeCluster sums the nodes; open is the connections open at the end
// of the measured phase.
func summarizeCluster(nodes []NodeStats, open int64) *Cluster {
	c := &Cluster{Nodes: nodes, GoroutinesSame: true}
	for _, n := range nodes {
		c.RSSStart += n.RSSStart
		c.RSSReady += n.RSSReady
		c.RSSEnd += n.RSSEnd
		if n.GoroutinesReady < 0 || n.GoroutinesReady != n.GoroutinesEnd {
			c.GoroutinesSame = false
		}
	}
	if open > 0 && c.RSSEnd > 0 {
		c.RSSPerConn = float64(c.RSSEnd-c.RSSStart) / float64(open)
		c.RSSPerConnFull = float64(c.RSSEnd) / float64(open)
	}
	return c
}

// signalNodes sends SIGTERM to every node process; it returns the first
// failure.
func signalNodes(pids []int) error {
	var first error
	for _, p := range pids {
		if err := syscall.Kill(p, syscall.SIGTERM); err != nil && first == nil {
			first = fmt.Errorf("bench: SIGTERM to node %d: %w", p, err)
		}
	}
	return first
}

// write adds the cluster lines to a summary.
func (c *Cluster) write(b *strings.Builder, k *Kernel) {
	fmt.Fprintf(b, "  nodes       %d: RSS %s at start → %s ready → %s end; %s per connection grown (%s whole)\n",
		len(c.Nodes), fmtBytes(float64(c.RSSStart)), fmtBytes(float64(c.RSSReady)), fmtBytes(float64(c.RSSEnd)),
		fmtBytes(c.RSSPerConn), fmtBytes(c.RSSPerConnFull))
	var g strings.Builder
	for i, n := range c.Nodes {
		if i == 12 && len(c.Nodes) > 13 {
			g.WriteString(" …")
			break
		}
		fmt.Fprintf(&g, " %d→%d", n.GoroutinesReady, n.GoroutinesEnd)
	}
	same := "constant"
	if !c.GoroutinesSame {
		same = "CHANGED"
	}
	fmt.Fprintf(b, "  nodes       goroutines ready→end (%s):%s\n", same, g.String())
	for _, n := range c.Nodes {
		if n.Exited {
			fmt.Fprintf(b, "  nodes       node pid %d EXITED during the run\n", n.PID)
		}
	}
	if k != nil {
		fmt.Fprintf(b, "  kernel      TCP inuse %d → %d, mem %d → %d pages; Slab %s → %s (SUnreclaim %s → %s); conntrack %d → %d\n",
			k.Start.TCPInuse, k.End.TCPInuse, k.Start.TCPMemPages, k.End.TCPMemPages,
			fmtBytes(float64(k.Start.Slab)), fmtBytes(float64(k.End.Slab)),
			fmtBytes(float64(k.Start.SUnreclaim)), fmtBytes(float64(k.End.SUnreclaim)),
			k.Start.ConntrackUsed, k.End.ConntrackUsed)
	}
}

// await waits up to d for a message of type typ from the parent, dropping
// others. ok is false on a timeout, a closed channel or ctx's end.
func (w *worker) await(ctx context.Context, in <-chan message, typ string, d time.Duration) (message, bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return message{}, false
		case m, ok := <-in:
			if !ok {
				return message{}, false
			}
			if m.Type == typ {
				return m, true
			}
		case <-t.C:
			return message{}, false
		}
	}
}

// nodeDrain is the worker's part of --drain-nodes: it tells the parent its
// deliveries are drained with its connections still open, waits for the
// parent to signal the nodes, then until the servers have closed every
// connection, at most DrainWait each. The loops count how each one ended.
func (w *worker) nodeDrain(ctx context.Context, in <-chan message, send func(message) bool, progress func(bool) bool, tick <-chan time.Time) error {
	w.each(func(l *loop) { l.serverDrain = true })
	s, _ := w.snapshot(false)
	if !send(message{Type: msgHeld, Stats: s}) {
		return ctx.Err()
	}
	if _, ok := w.await(ctx, in, msgNodeDrain, w.cfg.DrainWait); !ok {
		return ctx.Err() // nil unless cancelled: report the connections as still open
	}
	end := time.Now().Add(w.cfg.DrainWait)
	for time.Now().Before(end) {
		if s, _ := w.snapshot(false); s.Open == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case _, ok := <-in:
			if !ok {
				return nil
			}
		case <-tick:
			if !progress(false) {
				return ctx.Err()
			}
		}
	}
	return nil
}
