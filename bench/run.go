package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// Run executes one bounded run described by cfg and returns its figures.
// With cfg.Procs > 1 the connections are spread over child processes (see
// Config.Exe); with 1 the worker runs in this process. If progress is not
// nil a status line is rewritten on it every second (meant for a terminal).
func Run(ctx context.Context, cfg Config, progress io.Writer) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	raiseFileLimit()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	res := &Result{
		Label: cfg.Label, Mode: cfg.Mode, URL: cfg.URL, Date: time.Now().UTC(), Machine: machine(),
		Conns: cfg.Conns, Procs: cfg.Procs, Loops: cfg.loops(), Rate: cfg.Rate, Size: cfg.Size,
	}
	if cfg.Mode == ModeBroadcast {
		res.Channels, res.Publishers, res.Slow = cfg.Channels, cfg.publishers(), cfg.Slow
		res.PingRate = cfg.PingRate
	}
	if cfg.ServerPID > 0 || cfg.ServerMetrics != "" {
		res.Server = &ServerStats{PID: cfg.ServerPID, Goroutines: -1, RSSBound: cfg.RSSBound}
	}
	if cfg.ServerPID > 0 {
		ps, err := readProcStatus(cfg.ServerPID)
		if err != nil {
			return nil, fmt.Errorf("bench: server pid %d: %w", cfg.ServerPID, err)
		}
		res.Server.RSSBefore = ps.RSS
	}

	nodes := newNodes(&cfg)
	var kern *Kernel
	if len(nodes) > 0 {
		kern = &Kernel{Start: readKernel()}
		sampleNodes(&cfg, nodes, pointStart)
	}

	events := make(chan message, 16*cfg.Procs)
	handles := make([]*workerHandle, cfg.Procs)
	for i := range handles {
		if cfg.Procs == 1 {
			handles[i] = startInProcess(ctx, cfg, i, cfg.Procs, events)
			continue
		}
		h, err := startChild(ctx, cfg, i, cfg.Procs, events)
		if err != nil {
			cancel()
			for _, h := range handles[:i] {
				close(h.in)
				_ = h.wait()
			}
			return nil, err
		}
		handles[i] = h
	}
	sendAll := func(m message) {
		for _, h := range handles {
			select {
			case h.in <- m:
			default: // a worker that stopped reading has failed; its exit reports it
			}
		}
	}

	var serverCPU0 time.Duration
	r := runState{cfg: &cfg, res: res, progress: progress, stats: make([]Stats, cfg.Procs),
		ilat: make([]string, cfg.Procs), done: make([]*message, cfg.Procs), began: time.Now(), acc: newHist()}
	if cfg.AllChannel != "" {
		r.all = newEveryoneAcc()
	}
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	// A hard bound on the whole run, whatever a worker does.
	limit := cfg.SetupTimeout + cfg.Duration + 2*cfg.Drain + 30*time.Second
	if cfg.DrainNodes {
		limit += 2 * cfg.DrainWait
	}
	bound := time.NewTimer(limit)
	defer bound.Stop()
	// The server's RSS is sampled every 100 ms from /proc, and its RSS and
	// goroutines every second from /metrics, from the start of the
	// measured phase until the first worker reports its result.
	var (
		rssTick     <-chan time.Time
		samples     <-chan serverSample
		stopSamples = func() {}
		counters0   map[string]int64
	)
	defer func() { stopSamples() }()
	// fired ends the measured phase at once when it replaces deadline.
	fired := make(chan time.Time)
	close(fired)
	var (
		ready    int
		exited   int
		started  time.Time
		deadline <-chan time.Time
		runErr   error
	)
	for exited < cfg.Procs {
		select {
		case <-ctx.Done():
			if runErr == nil {
				runErr = ctx.Err()
			}
			sendAll(message{Type: msgStop})
			ctx = context.Background() // keep collecting until the workers exit
		case <-ticker.C:
			res.OpenTimeline = append(res.OpenTimeline, OpenPoint{T: time.Since(r.began).Seconds(), Open: r.total().Open})
			r.printProgress()
			if !started.IsZero() {
				r.second(started)
			}
		case <-rssTick:
			r.sampleRSS()
			if r.abort() && deadline != nil {
				deadline = fired
			}
		case sm := <-samples:
			res.Server.add(sm)
			if r.abort() && deadline != nil {
				deadline = fired
			}
		case <-bound.C:
			if runErr == nil {
				runErr = errors.New("bench: run exceeded its time bound (setup + duration + drain + 30s)")
			}
			cancel()
		case <-deadline:
			deadline = nil
			r.sampleServer()
			if res.Server != nil {
				if cpu, err := readCPU(res.Server.PID); err == nil {
					res.Server.CPU = 100 * (cpu - serverCPU0).Seconds() / time.Since(started).Seconds()
				}
			}
			res.Duration = time.Since(started).Seconds()
			r.stopped = time.Now()
			sendAll(message{Type: msgStop})
			r.openEnd = r.total().Open
			if len(nodes) > 0 {
				kern.End = readKernel()
				sampleNodes(&cfg, nodes, pointEnd)
			}
		case m := <-events:
			switch m.Type {
			case msgProgress:
				r.stats[m.Worker] = m.Stats
				r.ilat[m.Worker] = m.Lat
				if h, err := decodeHist(m.Lat); err == nil && !started.IsZero() {
					r.acc.Merge(h)
				}
			case msgReady:
				r.stats[m.Worker] = m.Stats
				if m.FirstDial != 0 && (r.firstDial == 0 || m.FirstDial < r.firstDial) {
					r.firstDial = m.FirstDial
				}
				r.lastOpen = max(r.lastOpen, m.LastOpen)
				r.pendingReady += m.Stats.Pending
				ready++
				if ready == cfg.Procs {
					started = time.Now()
					r.started = started
					if cfg.ServerPID > 0 {
						serverCPU0, _ = readCPU(res.Server.PID)
						r.sampleRSS()
						res.Server.RSSReady = res.Server.RSSDrained
						t := time.NewTicker(100 * time.Millisecond)
						defer t.Stop()
						rssTick = t.C
					}
					if res.Server != nil {
						if cfg.ServerMetrics != "" {
							counters0, _ = readCounters(cfg.ServerMetrics)
						}
						sctx, scancel := context.WithCancel(ctx)
						samples, stopSamples = watchServer(sctx, cfg.ServerPID, cfg.ServerMetrics, time.Second), scancel
					}
					r.phase = "run"
					r.mark(started)
					sendAll(message{Type: msgStart})
					deadline = time.After(cfg.Duration)
					r.readyAt = started
					if len(nodes) > 0 {
						kern.Ready = readKernel()
						sampleNodes(&cfg, nodes, pointReady)
					}
				}
			case msgPublished:
				res.Published = m.N
				r.per = m.Per
				r.allN = m.AllN
				sendAll(message{Type: msgExpect, N: m.N, Per: m.Per, AllN: m.AllN})
			case msgHeld:
				r.stats[m.Worker] = m.Stats
				r.held++
				if r.held == cfg.Procs && cfg.DrainNodes {
					r.nodeDrain = &NodeDrain{Held: r.total().Open, Signalled: true}
					r.nodeDrainAt = time.Now()
					if err := signalNodes(cfg.NodePIDs); err != nil {
						r.nodeDrain.Error = err.Error()
					}
					sendAll(message{Type: msgNodeDrain})
				}
			case msgDone:
				if !r.stopped.IsZero() {
					r.drain = time.Since(r.stopped)
				}
				if cfg.Mode == ModeConnect && cfg.ServerPID > 0 {
					if cpu, err := readCPU(cfg.ServerPID); err == nil {
						r.serverCPU = cpu - serverCPU0
					}
				}
				mm := m
				r.done[m.Worker] = &mm
				r.lastClose = max(r.lastClose, m.LastClose)
				if rssTick != nil {
					r.sampleRSS()
					rssTick = nil
				}
				stopSamples()
				samples = nil
			case msgError:
				if runErr == nil {
					runErr = fmt.Errorf("bench: worker %d: %s", m.Worker, m.Err)
				}
				cancel()
			case msgExit:
				exited++
				if r.done[m.Worker] == nil && runErr == nil {
					err := handles[m.Worker].wait()
					if err == nil {
						err = errors.New("exited without a result")
					}
					runErr = fmt.Errorf("bench: worker %d: %w", m.Worker, err)
					cancel()
				}
			}
		}
	}
	for _, h := range handles {
		close(h.in)
		_ = h.wait()
	}
	if progress != nil {
		fmt.Fprint(progress, "\r\033[K")
	}
	if runErr != nil {
		return nil, runErr
	}
	if res.Server != nil && cfg.ServerMetrics != "" && cfg.Mode == ModeBroadcast {
		if m, err := readMetrics(cfg.ServerMetrics, metricSlowClosed, metricLagDropped); err == nil {
			res.Server.SlowClosed, res.Server.LagDropped = m[metricSlowClosed], m[metricLagDropped]
		}
	}
	if res.Server != nil && cfg.ServerMetrics != "" && counters0 != nil {
		if c1, err := readCounters(cfg.ServerMetrics); err == nil {
			res.Server.Counters = counterGrowth(counters0, c1)
		}
	}
	if cfg.ServerPID > 0 && !processAlive(cfg.ServerPID) {
		res.Server.Exited = true
	}
	if len(nodes) > 0 {
		res.Cluster = summarizeCluster(nodes, r.openEnd)
		res.Kernel = kern
	}
	return res, r.finish()
}

// runState is the parent's view while a run is under way.
type runState struct {
	cfg      *Config
	res      *Result
	progress io.Writer
	phase    string
	began    time.Time
	stats    []Stats
	ilat     []string
	done     []*message
	last     Stats
	lastAt   time.Time
	per      []int64        // broadcast: acknowledged publishes per channel
	acc      *hdr.Histogram // latency reported since the last timeline point
	accRecv  int64          // Received at the last timeline point
	started  time.Time      // start of the measured phase
	stopped  time.Time      // when the measured phase ended
	drain    time.Duration  // from then until the last worker finished
	// serverCPU: the server's CPU time from the start of the measured
	// phase to the latest worker result (connect mode).
	serverCPU time.Duration
	// all merges the everyone figures; allN is the acknowledged everyone
	// broadcasts.
	all  *everyoneAcc
	allN int64
	// Opening: the earliest first dial and latest last upgrade (unix
	// nanos) the workers reported, and when all were ready.
	firstDial, lastOpen int64
	pendingReady        int64
	readyAt             time.Time
	// openEnd: connections open at the end of the measured phase.
	openEnd int64
	// --drain-nodes: workers held, when the nodes got SIGTERM, what was
	// seen, and the last close a worker saw (unix nanos).
	held        int
	nodeDrainAt time.Time
	nodeDrain   *NodeDrain
	lastClose   int64
}

func (r *runState) mark(t time.Time) {
	r.lastAt = t
	r.last = r.total()
}

func (r *runState) total() Stats {
	var s Stats
	for _, ws := range r.stats {
		s.add(ws)
	}
	return s
}

func (r *runState) printProgress() {
	if r.progress == nil {
		return
	}
	s := r.total()
	now := time.Now()
	phase := r.phase
	if phase == "" {
		phase = "open"
	}
	var rate float64
	if !r.lastAt.IsZero() {
		count := s.Received - r.last.Received
		if r.cfg.Mode == ModeConnect {
			count = s.Handshakes - r.last.Handshakes
		}
		rate = float64(count) / now.Sub(r.lastAt).Seconds()
		r.mark(now)
	}
	p99 := "-"
	if h, err := mergeEncoded(r.ilat...); err == nil && h.TotalCount() > 0 {
		p99 = fmtUs(float64(h.ValueAtQuantile(99)) / 1e3)
	}
	fmt.Fprintf(r.progress, "\r\033[K%5.0fs %-4s conns %d/%d  %.0f msg/s  p99 %s  errors %d  failed %d  dropped %d",
		now.Sub(r.began).Seconds(), phase, s.Open, r.cfg.Conns, rate, p99, s.Errors, s.ConnectFailed, s.Dropped)
}

// second appends a timeline point: what was received and its latency
// since the previous one. Workers report once a second on their own clocks,
// so a point may hold a little more or less than one second of samples.
func (r *runState) second(started time.Time) {
	if r.cfg.Mode != ModeBroadcast && r.cfg.Mode != ModeEcho {
		return
	}
	recv := r.total().Received
	r.res.Timeline = append(r.res.Timeline, Second{
		T:        time.Since(started).Seconds(),
		Received: recv - r.accRecv,
		P99:      float64(r.acc.ValueAtQuantile(99)) / 1e3,
	})
	r.accRecv = recv
	r.acc.Reset()
}

// sampleRSS reads the server's RSS into RSSDrained (the latest sample)
// and RSSPeak.
func (r *runState) sampleRSS() {
	sv := r.res.Server
	if sv == nil {
		return
	}
	if ps, err := readProcStatus(sv.PID); err == nil {
		sv.RSSDrained = ps.RSS
		sv.RSSPeak = max(sv.RSSPeak, ps.RSS)
	}
}

// sampleServer reads the server's memory and threads at the end of the
// measured phase, while every connection is still open.
func (r *runState) sampleServer() {
	sv := r.res.Server
	if sv == nil {
		return
	}
	if ps, err := readProcStatus(sv.PID); err == nil {
		sv.RSSAfter = ps.RSS
		sv.Threads = ps.Threads
	}
	if r.cfg.ServerMetrics != "" {
		if g, err := readGoroutines(r.cfg.ServerMetrics); err == nil {
			sv.Goroutines = g
		}
	}
	open := r.total().Open
	if open > 0 && sv.RSSAfter > 0 {
		sv.RSSPerConn = float64(sv.RSSAfter-sv.RSSBefore) / float64(open)
	}
}

// abort reports whether the measured phase must end now, recording why in
// the result the first time: the server exited, or its RSS passed
// --abort-rss.
func (r *runState) abort() bool {
	sv := r.res.Server
	if sv == nil || r.res.Aborted != "" || !r.stopped.IsZero() {
		return false
	}
	at := time.Since(r.started).Seconds()
	switch {
	case sv.Exited:
		r.res.Aborted = fmt.Sprintf("the server exited %.1fs into the measured phase", at)
	case r.cfg.AbortRSS > 0 && sv.RSSPeak > r.cfg.AbortRSS:
		r.res.Aborted = fmt.Sprintf("server RSS %s passed --abort-rss %s %.1fs into the measured phase",
			fmtBytes(float64(sv.RSSPeak)), fmtBytes(float64(r.cfg.AbortRSS)), at)
	default:
		return false
	}
	return true
}

// finish merges the workers' final messages into the result.
func (r *runState) finish() error {
	res := r.res
	lat, conn, lag, ping := newHist(), newHist(), newHist(), newHist()
	var grown int64
	var cpu float64
	for i, m := range r.done {
		if m == nil {
			return fmt.Errorf("bench: worker %d sent no result", i)
		}
		res.Stats.add(m.Stats)
		res.ClientRSS += m.RSS
		grown += m.RSS - m.RSSBase
		cpu += m.CPU
		res.Attacks = mergeAttacks(res.Attacks, m.Attacks)
		if r.all != nil {
			if err := r.all.add(m); err != nil {
				return err
			}
		}
		res.Tokens = res.Tokens.add(m.Tokens)
		for _, p := range []struct {
			dst *hdr.Histogram
			enc string
		}{{lat, m.Lat}, {conn, m.Conn}, {lag, m.Lag}, {ping, m.Ping}} {
			h, err := decodeHist(p.enc)
			if err != nil {
				return err
			}
			if dropped := p.dst.Merge(h); dropped != 0 {
				return fmt.Errorf("bench: merging worker %d dropped %d samples", i, dropped)
			}
		}
	}
	if !r.started.IsZero() && res.Stats.Received > r.accRecv {
		// What arrived after the last progress report.
		res.Timeline = append(res.Timeline, Second{T: time.Since(r.started).Seconds(),
			Received: res.Stats.Received - r.accRecv, P99: float64(r.acc.ValueAtQuantile(99)) / 1e3})
	}
	if r.all != nil {
		res.Everyone = r.all.result(r.cfg, res.Stats, r.allN)
	}
	if r.cfg.Auth.Key != "" && r.cfg.Mode != ModeConnect {
		res.ServerSubsOwed = res.Stats.Connected * int64(min(255, len(r.cfg.Auth.Subs)))
	}
	if r.firstDial != 0 && r.lastOpen > r.firstDial {
		o := &Opening{Seconds: float64(r.lastOpen-r.firstDial) / 1e9}
		o.PerSecond = float64(res.Stats.Connected) / o.Seconds
		o.Pending = r.pendingReady
		if !r.readyAt.IsZero() {
			o.SetupSeconds = r.readyAt.Sub(r.began).Seconds()
		}
		res.Opening = o
	}
	if d := r.nodeDrain; d != nil {
		d.Left = res.Stats.Open
		if r.lastClose > 0 {
			d.Seconds = float64(r.lastClose-r.nodeDrainAt.UnixNano()) / 1e9
		}
		res.NodeDrain = d
		if res.Cluster != nil {
			res.Cluster.DrainSeconds = d.Seconds
		}
	}
	res.Latency = summarize(lat)
	res.ConnectTime = summarize(conn)
	res.ClientLag = summarize(lag)
	if r.cfg.PingRate > 0 {
		s := summarize(ping)
		res.PingLatency = &s
	}
	res.LatencyHist = encodeHist(lat)
	if res.Duration == 0 {
		res.Duration = r.cfg.Duration.Seconds()
	}
	res.ClientCPU = 100 * cpu / (res.Duration + r.drain.Seconds())
	s := res.Stats
	switch r.cfg.Mode {
	case ModeEcho:
		res.Missing = s.Sent - s.Received
		res.MsgPerSec = float64(s.Received) / res.Duration
	case ModeBroadcast:
		// Every subscriber asked for is owed every acknowledged publish: one
		// that failed to connect or subscribe shows up as missing deliveries.
		// Subscriber g is on channel g % Channels, so channel c has
		// share(Conns, c, Channels) of them.
		per := r.per
		if len(per) == 0 {
			per = []int64{res.Published}
		}
		res.Expected = 0
		for c, n := range per {
			res.Expected += n * int64(share(r.cfg.Conns, c, max(1, r.cfg.Channels)))
		}
		res.Missing = max(0, res.Expected-s.Unique)
		res.MsgPerSec = float64(s.Received) / res.Duration
	case ModeConnect:
		res.HandshakesPerSec = float64(s.Handshakes) / res.Duration
		if res.Server != nil && s.Handshakes > 0 && r.serverCPU > 0 {
			res.Server.CPUPerHandshake = float64(r.serverCPU.Microseconds()) / float64(s.Handshakes)
		}
	}
	// Workers take their RSS before dialing and again with every connection
	// still open, so the difference is what the connections cost the client
	// (unless attackers, not counted as open, cost some of it).
	open := s.Open
	if r.nodeDrain != nil {
		open = r.nodeDrain.Held // the workers took their RSS before the nodes drained
	}
	if open > 0 && r.cfg.Mode != ModeConnect && !r.cfg.Attack.any() {
		res.ClientRSSPerConn = float64(grown) / float64(open)
	}
	return nil
}
