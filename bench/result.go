package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// Result is one run's figures, printed as a summary or as JSON (--json). It
// carries the encoded latency histogram so runs saved as JSON can be merged
// or plotted later. Run returns a fresh Result owned by its caller.
type Result struct {
	Label   string    `json:"label,omitempty"`
	Mode    Mode      `json:"mode"`
	URL     string    `json:"url"`
	Command string    `json:"command,omitempty"`
	Date    time.Time `json:"date"`
	Machine Machine   `json:"machine"`

	Conns    int     `json:"conns"`
	Procs    int     `json:"procs"`
	Loops    int     `json:"loops_per_proc"`
	Rate     float64 `json:"rate"`
	Size     int     `json:"size"`
	Duration float64 `json:"duration_s"` // the measured phase
	// Broadcast: channels the subscribers are spread over (Rate is per
	// channel), publisher connections, and slow (never-reading) subscribers.
	Channels   int `json:"channels,omitempty"`
	Publishers int `json:"publishers,omitempty"`
	Slow       int `json:"slow,omitempty"`
	// PingRate: pings per second per subscriber (broadcast --ping-rate).
	PingRate float64 `json:"ping_rate,omitempty"`

	Stats Stats `json:"stats"`
	// Broadcast: publishes the server acknowledged, and deliveries owed
	// (acknowledged publishes × subscribers).
	Published int64 `json:"published,omitempty"`
	Expected  int64 `json:"expected_deliveries,omitempty"`
	// Missing: echo replies never received, or deliveries owed but not
	// received (duplicates do not count).
	Missing int64 `json:"missing"`

	MsgPerSec        float64 `json:"msg_per_sec"`
	HandshakesPerSec float64 `json:"handshakes_per_sec,omitempty"`

	// Latency: echo round trip, publish → delivery, or connect → 101.
	Latency     Summary `json:"latency"`
	ConnectTime Summary `json:"connect_time"`
	// ClientLag: how late the client's paced sends left (its own health).
	ClientLag Summary `json:"client_lag"`
	// PingLatency: ping command → reply (broadcast --ping-rate).
	PingLatency *Summary `json:"ping_latency,omitempty"`

	// Tokens: what the run minted (--token-key), nil if it minted none.
	Tokens *TokenStats `json:"tokens,omitempty"`

	// Attacks: what became of each kind of attacker (--slowloris …).
	Attacks []AttackStats `json:"attacks,omitempty"`
	// Aborted says why the measured phase ended before its duration
	// (the server exited, or its RSS passed --abort-rss).
	Aborted string `json:"aborted,omitempty"`

	Server *ServerStats `json:"server,omitempty"`
	// Client memory: resident set of all bench processes at the end, and
	// that divided by the connections open.
	ClientRSS        int64   `json:"client_rss_bytes"`
	ClientRSSPerConn float64 `json:"client_rss_per_conn_bytes"`
	// ClientCPU is the bench processes' CPU use over the measured phase
	// and drain, in percent of one core.
	ClientCPU float64 `json:"client_cpu_percent"`

	LatencyHist string `json:"latency_hist"`
	// Timeline: one point per second of the measured phase and the drain,
	// to tell a sustained rate from a backlog that grows.
	Timeline []Second `json:"timeline,omitempty"`

	// ServerSubsOwed: subscribed pushes the connections' minted tokens
	// promised (connections × --token-subs entries); Stats.ServerSubs
	// says how many came.
	ServerSubsOwed int64 `json:"server_subs_owed,omitempty"`
	// Everyone: the everyone broadcasts (--all-channel), nil without.
	Everyone *Everyone `json:"everyone,omitempty"`
	// Opening: how fast the connections opened.
	Opening *Opening `json:"opening,omitempty"`
	// OpenTimeline: connections open once a second from the start of the
	// run (setup, measured phase, drains).
	OpenTimeline []OpenPoint `json:"open_timeline,omitempty"`
	// Cluster and Kernel: the nodes (--node-pids, --node-metrics) and the
	// machine's socket memory at start, ready and end (nodes.go).
	Cluster *Cluster `json:"cluster,omitempty"`
	Kernel  *Kernel  `json:"kernel,omitempty"`
	// NodeDrain (--drain-nodes): connections open when the nodes got
	// SIGTERM, and how many were still open when the wait ended.
	NodeDrain *NodeDrain `json:"node_drain,omitempty"`
}

// Opening is how the connections of a run opened: from the first dial of
// any process to the last completed upgrade of any (wall clock, so it
// spans the processes), and upgrades per second over that window; and from
// the start of the run (processes starting, tokens minted) until every
// connection was open and subscribed.
type Opening struct {
	Seconds      float64 `json:"seconds"`
	PerSecond    float64 `json:"per_second"`
	SetupSeconds float64 `json:"setup_s"`
	// Pending: handshakes, subscribe replies and subscribed pushes still
	// owed when the measured phase began (the setup timed out or stalled).
	Pending int64 `json:"pending_at_start"`
}

// OpenPoint is one point of Result.OpenTimeline: seconds since the run
// began, connections open.
type OpenPoint struct {
	T    float64 `json:"t_s"`
	Open int64   `json:"open"`
}

// NodeDrain is what --drain-nodes saw; the per-connection counts are in
// Stats (DrainPushes, DrainClean, DrainOther).
type NodeDrain struct {
	Held      int64   `json:"held"`
	Left      int64   `json:"left_open"`
	Seconds   float64 `json:"seconds"`
	Signalled bool    `json:"signalled"`
	Error     string  `json:"error,omitempty"`
}

// TokenStats describe the tokens a run minted before connecting, one per
// connection (--token-key); part of a Result.
type TokenStats struct {
	Alg   string `json:"alg"`
	In    string `json:"in"` // where connections sent them (TokenIn*)
	Count int64  `json:"count"`
	// Bytes: the tokens' bytes, as the client processes hold them.
	Bytes int64 `json:"bytes"`
	// MintSeconds: the longest any process took to mint its share.
	MintSeconds float64 `json:"mint_s"`
}

func (t *TokenStats) add(o *TokenStats) *TokenStats {
	if o == nil {
		return t
	}
	if t == nil {
		c := *o
		return &c
	}
	t.Count += o.Count
	t.Bytes += o.Bytes
	t.MintSeconds = max(t.MintSeconds, o.MintSeconds)
	return t
}

// Second is one point of a Result's timeline: messages received (echo
// replies, deliveries) in the second before T (seconds from the start of
// the measured phase) and the p99 latency of the samples reported in it.
type Second struct {
	T        float64 `json:"t_s"`
	Received int64   `json:"received"`
	P99      float64 `json:"p99_us"`
}

// ServerStats are read from /proc/<pid>/status of the server under test by
// the parent process; part of a Result.
type ServerStats struct {
	PID int `json:"pid"`
	// RSS before any connection and at the end of the measured phase.
	RSSBefore  int64   `json:"rss_before_bytes"`
	RSSAfter   int64   `json:"rss_after_bytes"`
	RSSPerConn float64 `json:"rss_per_conn_bytes"`
	// RSS with every connection open when the measured phase starts, the
	// highest of the samples taken every 100 ms from then until the first
	// worker finished draining, and the last of those samples.
	RSSReady   int64 `json:"rss_ready_bytes,omitempty"`
	RSSPeak    int64 `json:"rss_peak_bytes,omitempty"`
	RSSDrained int64 `json:"rss_drained_bytes,omitempty"`
	Threads    int64 `json:"threads"`
	// Goroutines from the server's /metrics (go_goroutines) at the end of
	// the measured phase; -1 if unknown.
	Goroutines int64 `json:"goroutines"`
	// From /metrics at the start of the measured phase and every second
	// until the first worker reports its result: the samples read and
	// failed, and the goroutines' range; RSSPeak also takes
	// process_resident_memory_bytes.
	Samples       int   `json:"samples,omitempty"`
	SampleErrors  int   `json:"sample_errors,omitempty"`
	GoroutinesMin int64 `json:"goroutines_min,omitempty"`
	GoroutinesMax int64 `json:"goroutines_max,omitempty"`
	// RSSBound is the memory bound the server was configured to
	// (--server-rss-bound), for comparison with RSSPeak.
	RSSBound int64 `json:"rss_bound_bytes,omitempty"`
	// Exited: the server process was gone (or a zombie) during or after the run.
	Exited bool `json:"exited,omitempty"`
	// Counters: how much each wsedge_*_total counter of /metrics grew from
	// the start of the measured phase to the end of the run.
	Counters map[string]int64 `json:"counters,omitempty"`
	// CPU is the server's CPU use over the measured phase, in percent of
	// one core.
	CPU float64 `json:"cpu_percent"`
	// CPUPerHandshake (connect mode) is the server's CPU time from the
	// start of the measured phase until the last worker finished its
	// drain, in which the handshakes in flight at the end complete,
	// divided by the handshakes: each a TCP accept, upgrade, close
	// handshake and close. Microseconds.
	CPUPerHandshake float64 `json:"cpu_per_handshake_us,omitempty"`
	// Slow-consumer counters from the server's /metrics after the run:
	// connections closed by the close policy, messages dropped by lag.
	SlowClosed int64 `json:"slow_closed,omitempty"`
	LagDropped int64 `json:"lag_dropped,omitempty"`
}

// WriteJSON writes r as indented JSON.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// ReadResults reads results written by WriteJSON: one or several JSON
// objects, or a JSON array of them.
func ReadResults(rd io.Reader) ([]*Result, error) {
	dec := json.NewDecoder(rd)
	var out []*Result
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err == io.EOF {
			return out, nil
		} else if err != nil {
			return nil, fmt.Errorf("bench: reading results: %w", err)
		}
		if len(raw) > 0 && raw[0] == '[' {
			var rs []*Result
			if err := json.Unmarshal(raw, &rs); err != nil {
				return nil, fmt.Errorf("bench: reading results: %w", err)
			}
			out = append(out, rs...)
			continue
		}
		r := new(Result)
		if err := json.Unmarshal(raw, r); err != nil {
			return nil, fmt.Errorf("bench: reading results: %w", err)
		}
		out = append(out, r)
	}
}

// ReadResultFiles reads every result in the named files.
func ReadResultFiles(paths ...string) ([]*Result, error) {
	var out []*Result
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		rs, err := ReadResults(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		out = append(out, rs...)
	}
	return out, nil
}

// fmtUs formats microseconds with a unit that keeps 3 significant digits.
func fmtUs(us float64) string {
	switch {
	case us < 1000:
		return fmt.Sprintf("%.0fµs", us)
	case us < 1e6:
		return fmt.Sprintf("%.3gms", us/1e3)
	default:
		return fmt.Sprintf("%.3gs", us/1e6)
	}
}

// fmtBytes formats a byte count in binary units.
func fmtBytes(b float64) string {
	switch {
	case b < 1024:
		return fmt.Sprintf("%.0f B", b)
	case b < 1<<20:
		return fmt.Sprintf("%.1f KiB", b/1024)
	case b < 1<<30:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	default:
		return fmt.Sprintf("%.2f GiB", b/(1<<30))
	}
}

func (s Summary) String() string {
	if s.Count == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (n=%d)",
		fmtUs(s.P50), fmtUs(s.P90), fmtUs(s.P99), fmtUs(s.P999), fmtUs(s.Max), s.Count)
}

// success is the measured clients' share of what they were owed: ping
// replies of pings sent, unique deliveries of deliveries expected.
func (r *Result) success() string {
	pct := func(n, of int64) string {
		if of == 0 {
			return "-"
		}
		return fmt.Sprintf("%.3f%%", 100*float64(n)/float64(of))
	}
	out := "deliveries " + pct(r.Stats.Unique, r.Expected)
	if r.PingRate > 0 {
		out = "pings " + pct(r.Stats.Pongs, r.Stats.Pings) + "  " + out
	}
	return fmt.Sprintf("%s  (%d measured connections dropped)", out, r.Stats.Dropped)
}

// boundNote compares the RSS peak with the configured bound, if one was given.
func (sv *ServerStats) boundNote() string {
	if sv.RSSBound <= 0 {
		return ""
	}
	verdict := "within"
	if sv.RSSPeak > sv.RSSBound {
		verdict = "OVER"
	}
	return fmt.Sprintf(" (%s the bound %s)", verdict, fmtBytes(float64(sv.RSSBound)))
}

// WriteSummary writes the human summary.
func (r *Result) WriteSummary(w io.Writer) {
	var b strings.Builder
	title := "wsedge bench " + string(r.Mode) + "  " + r.URL
	if r.Label != "" {
		title += "  [" + r.Label + "]"
	}
	fmt.Fprintln(&b, title)
	if r.Aborted != "" {
		fmt.Fprintf(&b, "  ABORTED     %s\n", r.Aborted)
	}
	s := r.Stats
	if r.Mode == ModeConnect {
		fmt.Fprintf(&b, "  conns       %d in flight, %d upgraded, %d failed, %d dropped; %d procs × %d loops\n",
			r.Conns, s.Connected, s.ConnectFailed, s.Dropped, r.Procs, r.Loops)
	} else {
		fmt.Fprintf(&b, "  conns       %d asked, %d connected, %d failed, %d dropped; %d procs × %d loops\n",
			r.Conns, s.Connected, s.ConnectFailed, s.Dropped, r.Procs, r.Loops)
	}
	switch r.Mode {
	case ModeEcho:
		load := fmt.Sprintf("%g msg/s per conn", r.Rate)
		if r.Rate == 0 {
			load = "closed loop"
		}
		fmt.Fprintf(&b, "  load        %s × %d B for %.1fs\n", load, r.Size, r.Duration)
		fmt.Fprintf(&b, "  messages    sent %d  received %d  missing %d  errors %d\n", s.Sent, s.Received, r.Missing, s.Errors)
		fmt.Fprintf(&b, "  throughput  %.0f msg/s\n", r.MsgPerSec)
		fmt.Fprintf(&b, "  round trip  %s\n", r.Latency)
	case ModeBroadcast:
		fmt.Fprintf(&b, "  load        %d publisher(s) × %d channel(s) × %g msg/s × %d B to %d subscribers for %.1fs\n",
			max(1, r.Publishers), max(1, r.Channels), r.Rate, r.Size, s.Subscribed, r.Duration)
		fmt.Fprintf(&b, "  publishes   sent %d  acknowledged %d\n", s.Sent, r.Published)
		fmt.Fprintf(&b, "  deliveries  expected %d  received %d  unique %d  missing %d  duplicated %d  out of order %d  errors %d\n",
			r.Expected, s.Received, s.Unique, r.Missing, s.Duplicates, s.OutOfOrder, s.Errors)
		if s.Lagged > 0 || s.Disconnected > 0 {
			fmt.Fprintf(&b, "  measured    %d lagged pushes, %d disconnect pushes to measured subscribers\n", s.Lagged, s.Disconnected)
		}
		if r.Slow > 0 {
			fmt.Fprintf(&b, "  slow        %d asked, %d subscribed, %d seen closed by the server before the drain ended (last code %d)\n",
				r.Slow, s.SlowSubscribed, s.SlowClosed, s.SlowCloseCode)
		}
		fmt.Fprintf(&b, "  throughput  %.0f deliveries/s\n", r.MsgPerSec)
		fmt.Fprintf(&b, "  delivery    %s\n", r.Latency)
		if r.PingRate > 0 {
			fmt.Fprintf(&b, "  pings       %g/s per subscriber: sent %d  ok %d  errors %d\n", r.PingRate, s.Pings, s.Pongs, s.PingErrors)
			if r.PingLatency != nil {
				fmt.Fprintf(&b, "  ping rtt    %s\n", *r.PingLatency)
			}
		}
		fmt.Fprintf(&b, "  success     %s\n", r.success())
	case ModeConnect:
		fmt.Fprintf(&b, "  load        %d handshakes in flight for %.1fs\n", r.Conns, r.Duration)
		fmt.Fprintf(&b, "  handshakes  %d  (%.0f/s)  errors %d\n", s.Handshakes, r.HandshakesPerSec, s.Errors)
		fmt.Fprintf(&b, "  upgrade     %s\n", r.Latency)
		if sv := r.Server; sv != nil && sv.CPUPerHandshake > 0 {
			fmt.Fprintf(&b, "  server CPU  %.1f µs per handshake\n", sv.CPUPerHandshake)
		}
	case ModeIdle:
		fmt.Fprintf(&b, "  held        %d open for %.1fs\n", s.Open, r.Duration)
		if s.ServerSubs > 0 || s.Subscribed > 0 {
			fmt.Fprintf(&b, "  subscribed  %d connections by their token (%d subscribed pushes)\n", s.Subscribed, s.ServerSubs)
		}
	}
	if r.ServerSubsOwed > 0 || s.SubRetries > 0 {
		fmt.Fprintf(&b, "  subscribing %d of %d subscribed pushes owed by the tokens came; %d subscribes refused with 503 and sent again\n",
			s.ServerSubs, r.ServerSubsOwed, s.SubRetries)
	}
	if e := r.Everyone; e != nil {
		e.write(&b)
	}
	if s.PingFrames > 0 || s.PingPushes > 0 {
		fmt.Fprintf(&b, "  heartbeats  %d ping frames answered with a pong, %d ping pushes\n", s.PingFrames, s.PingPushes)
	}
	if o := r.Opening; o != nil {
		fmt.Fprintf(&b, "  opening     %d upgrades in %.1fs: %.0f/s (first dial to last upgrade); measured phase began %.1fs after the run did",
			s.Connected, o.Seconds, o.PerSecond, o.SetupSeconds)
		if o.Pending > 0 {
			fmt.Fprintf(&b, ", with %d replies or pushes still owed (setup timed out or stalled)", o.Pending)
		}
		b.WriteString("\n")
	}
	if d := r.NodeDrain; d != nil {
		fmt.Fprintf(&b, "  node drain  %d open at SIGTERM: %d disconnect pushes (4001), %d closed 1001 after it, %d ended otherwise, %d still open; last closed %.1fs after SIGTERM\n",
			d.Held, s.DrainPushes, s.DrainClean, s.DrainOther, d.Left, d.Seconds)
		if d.Error != "" {
			fmt.Fprintf(&b, "  node drain  %s\n", d.Error)
		}
	}
	if c := r.Cluster; c != nil {
		c.write(&b, r.Kernel)
	}
	if t := r.Tokens; t != nil && t.Count > 0 {
		fmt.Fprintf(&b, "  tokens      %d %s minted before connecting in %.2fs, sent in the %s; %s (%.0f B each)\n",
			t.Count, t.Alg, t.MintSeconds, t.In, fmtBytes(float64(t.Bytes)), float64(t.Bytes)/float64(t.Count))
	}
	if n := len(r.Timeline); n > 0 {
		b.WriteString("  per second  p99")
		for i, p := range r.Timeline {
			if i == 30 && n > 31 {
				b.WriteString(" …")
				p = r.Timeline[n-1]
				fmt.Fprintf(&b, " %s", fmtUs(p.P99))
				break
			}
			fmt.Fprintf(&b, " %s", fmtUs(p.P99))
		}
		b.WriteString("\n")
	}
	if r.Mode != ModeConnect {
		fmt.Fprintf(&b, "  connect     %s\n", r.ConnectTime)
	}
	for i := range r.Attacks {
		fmt.Fprintf(&b, "  attack      %s\n", &r.Attacks[i])
	}
	if r.ClientLag.Count > 0 {
		fmt.Fprintf(&b, "  client lag  p99 %s  max %s (paced sends leaving late)\n", fmtUs(r.ClientLag.P99), fmtUs(r.ClientLag.Max))
	}
	if sv := r.Server; sv != nil {
		g := "?"
		if sv.Goroutines >= 0 {
			g = fmt.Sprint(sv.Goroutines)
		}
		if sv.PID > 0 {
			fmt.Fprintf(&b, "  server      pid %d  RSS %s → %s  (%s per conn)  threads %d  goroutines %s  CPU %.0f%%\n",
				sv.PID, fmtBytes(float64(sv.RSSBefore)), fmtBytes(float64(sv.RSSAfter)), fmtBytes(sv.RSSPerConn), sv.Threads, g, sv.CPU)
		}
		if sv.Samples > 0 || sv.SampleErrors > 0 {
			fmt.Fprintf(&b, "  server /metrics %d samples (%d failed)  RSS peak %s%s  goroutines %d..%d\n",
				sv.Samples, sv.SampleErrors, fmtBytes(float64(sv.RSSPeak)), sv.boundNote(), sv.GoroutinesMin, sv.GoroutinesMax)
		}
		if sv.Exited {
			b.WriteString("  server      EXITED during or after the run\n")
		}
		if len(sv.Counters) > 0 {
			keys := make([]string, 0, len(sv.Counters))
			for k := range sv.Counters {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for i, k := range keys {
				if i%3 == 0 {
					b.WriteString("  server grew")
				}
				fmt.Fprintf(&b, "  %s +%d", k, sv.Counters[k])
				if i%3 == 2 || i == len(keys)-1 {
					b.WriteString("\n")
				}
			}
		}
		if sv.SlowClosed > 0 || sv.LagDropped > 0 {
			fmt.Fprintf(&b, "  server slow %d closed (policy close), %d messages dropped (policy lag), from /metrics\n", sv.SlowClosed, sv.LagDropped)
		}
		if sv.RSSPeak > 0 {
			fmt.Fprintf(&b, "  server RSS  ready %s  peak %s  drained %s (sampled every 100 ms)\n",
				fmtBytes(float64(sv.RSSReady)), fmtBytes(float64(sv.RSSPeak)), fmtBytes(float64(sv.RSSDrained)))
		}
	}
	perConn := ""
	if r.ClientRSSPerConn > 0 {
		perConn = "  (" + fmtBytes(r.ClientRSSPerConn) + " per conn)"
	}
	fmt.Fprintf(&b, "  client      RSS %s%s, %s per process  CPU %.0f%%\n", fmtBytes(float64(r.ClientRSS)), perConn,
		fmtBytes(float64(r.ClientRSS)/float64(max(1, r.Procs))), r.ClientCPU)
	if s.LastError != "" {
		fmt.Fprintf(&b, "  last error  %s\n", s.LastError)
	}
	fmt.Fprintf(&b, "  machine     %s; %s\n", r.Machine, r.Date.UTC().Format(time.RFC3339))
	io.WriteString(w, b.String())
}
