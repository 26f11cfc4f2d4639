package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wsedge/wsedge/client"
)

// ReconnectConfig is a reconnect-storm run (`wsedge bench reconnect`):
// Conns clients of package client connect to URL; the run sends SIGTERM
// to ServerPID (the node behind URL) and from then on dials To instead,
// as a load balancer would once the draining node left its pool; it
// counts, per Bin, when the clients are disconnected and when they are
// connected again. The clients are the real client library, so they
// honour the reconnect delay a draining server names and add their own
// backoff jitter, exactly as applications would.
type ReconnectConfig struct {
	URL, To   string
	Conns     int
	ServerPID int
	// Sources spreads the clients over source addresses 127.0.0.2… (the
	// storm opens every connection twice: one address runs out of ports).
	Sources int
	// DialConcurrency bounds the connections being opened at once while
	// setting up.
	DialConcurrency int
	SetupTimeout    time.Duration
	// Window is how long after the SIGTERM the run waits for every client
	// to be back; Bin is the width of one plotted bar.
	Window time.Duration
	Bin    time.Duration
	Label  string
}

// DefaultReconnect returns the defaults.
func DefaultReconnect() ReconnectConfig {
	return ReconnectConfig{
		URL: "ws://127.0.0.1:8080/ws", To: "ws://127.0.0.1:8081/ws",
		Conns: 1000, Sources: 8, DialConcurrency: 256,
		SetupTimeout: 2 * time.Minute, Window: 60 * time.Second, Bin: 100 * time.Millisecond,
	}
}

// ReconnectResult is a reconnect-storm run's outcome (JSON with --json).
type ReconnectResult struct {
	Label   string    `json:"label"`
	Date    time.Time `json:"date"`
	Machine Machine   `json:"machine"`
	Conns   int       `json:"conns"`
	BinMs   float64   `json:"bin_ms"`
	// Per bin from the SIGTERM: clients disconnected, clients connected
	// again (to To).
	Disconnects []int `json:"disconnects"`
	Reconnects  []int `json:"reconnects"`
	Back        int   `json:"back"` // clients connected again within the window
	Lost        int   `json:"lost"` // clients the server closed
	// Reconnects in the busiest bin, and when the clients came back.
	Peak      int     `json:"peak_per_bin"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
	LastMs    float64 `json:"last_ms"`
	SetupSecs float64 `json:"setup_s"`
	// Disconnect pushes that named a reconnect delay, and the largest.
	Delayed    int     `json:"delayed"`
	MaxDelayMs float64 `json:"max_delay_ms"`
}

// RunReconnect runs one reconnect storm.
func RunReconnect(ctx context.Context, cfg ReconnectConfig, progress io.Writer) (*ReconnectResult, error) {
	if cfg.Conns < 1 || cfg.Bin <= 0 || cfg.Window < cfg.Bin || cfg.ServerPID <= 0 || cfg.Sources < 1 || cfg.DialConcurrency < 1 {
		return nil, errors.New("bench reconnect: want conns >= 1, a server pid, window >= bin > 0, sources and dial concurrency >= 1")
	}
	from, err := hostPort(cfg.URL)
	if err != nil {
		return nil, err
	}
	to, err := hostPort(cfg.To)
	if err != nil {
		return nil, err
	}
	var (
		target   atomic.Pointer[string]
		t0       atomic.Int64 // unix ns of the SIGTERM; 0 before
		next     atomic.Uint64
		bins     = int(cfg.Window/cfg.Bin) + 1
		disc     = make([]atomic.Int64, bins)
		reco     = make([]atomic.Int64, bins)
		backAt   = make([]atomic.Int64, cfg.Conns) // ns after t0, 0 = not back
		back     atomic.Int64
		lost     atomic.Int64
		delayed  atomic.Int64
		maxDelay atomic.Int64
	)
	target.Store(&from)
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		src := net.IPv4(127, 0, 0, byte(2+next.Add(1)%uint64(cfg.Sources)))
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}}
		return d.DialContext(ctx, network, *target.Load())
	}
	bin := func() int {
		at := time.Now().UnixNano() - t0.Load()
		return min(int(at/int64(cfg.Bin)), bins-1)
	}
	clients := make([]*client.Client, cfg.Conns)
	defer func() {
		var wg sync.WaitGroup
		for i := range clients {
			if c := clients[i]; c != nil {
				wg.Add(1)
				go func() { defer wg.Done(); c.Close() }()
			}
		}
		wg.Wait()
	}()
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, cfg.SetupTimeout)
	defer cancel()
	var (
		wg      sync.WaitGroup
		firstMu sync.Mutex
		first   error
	)
	sem := make(chan struct{}, cfg.DialConcurrency)
	for i := range clients {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			onState := func(ev client.StateChange) {
				if t0.Load() == 0 {
					return
				}
				switch ev.To {
				case client.StateDisconnected:
					if ev.From == client.StateConnected {
						disc[bin()].Add(1)
						lost.Add(1)
						var d *client.DisconnectError
						if errors.As(ev.Err, &d) && d.Delay > 0 {
							delayed.Add(1)
							for {
								m := maxDelay.Load()
								if int64(d.Delay) <= m || maxDelay.CompareAndSwap(m, int64(d.Delay)) {
									break
								}
							}
						}
					}
				case client.StateConnected:
					if backAt[i].CompareAndSwap(0, max(time.Now().UnixNano()-t0.Load(), 1)) {
						reco[bin()].Add(1)
						back.Add(1)
					}
				}
			}
			c, err := client.Dial(sctx, cfg.URL, client.WithNetDial(dial), client.WithStateHandler(onState),
				client.WithReadTimeout(10*time.Minute), client.WithOfflineQueue(0))
			if err != nil {
				firstMu.Lock()
				if first == nil {
					first = fmt.Errorf("client %d: %w", i, err)
				}
				firstMu.Unlock()
				return
			}
			clients[i] = c
		}()
		if sctx.Err() != nil {
			break
		}
	}
	wg.Wait()
	if first != nil {
		return nil, fmt.Errorf("bench reconnect: setup: %w", first)
	}
	setup := time.Since(start)
	fmt.Fprintf(progress, "reconnect: %d clients connected to %s in %v; SIGTERM to pid %d, clients now dial %s\n",
		cfg.Conns, from, setup.Round(time.Millisecond), cfg.ServerPID, to)
	target.Store(&to)
	t0.Store(time.Now().UnixNano())
	if err := syscall.Kill(cfg.ServerPID, syscall.SIGTERM); err != nil {
		return nil, fmt.Errorf("bench reconnect: SIGTERM to %d: %w", cfg.ServerPID, err)
	}
	deadline := time.Now().Add(cfg.Window)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for back.Load() < int64(cfg.Conns) && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
			fmt.Fprintf(progress, "reconnect: %.0fs: %d disconnected, %d back\n",
				time.Since(time.Unix(0, t0.Load())).Seconds(), lost.Load(), back.Load())
		}
	}
	r := &ReconnectResult{
		Label: cfg.Label, Date: time.Now().UTC(), Machine: machine(), Conns: cfg.Conns,
		BinMs: float64(cfg.Bin) / 1e6, Back: int(back.Load()), Lost: int(lost.Load()),
		SetupSecs: setup.Seconds(), Delayed: int(delayed.Load()), MaxDelayMs: float64(maxDelay.Load()) / 1e6,
	}
	last := 0
	for i := range bins {
		r.Disconnects = append(r.Disconnects, int(disc[i].Load()))
		r.Reconnects = append(r.Reconnects, int(reco[i].Load()))
		r.Peak = max(r.Peak, r.Reconnects[i])
		if r.Reconnects[i] > 0 || r.Disconnects[i] > 0 {
			last = i + 1
		}
	}
	r.Disconnects, r.Reconnects = r.Disconnects[:last], r.Reconnects[:last]
	var ats []int64
	for i := range backAt {
		if at := backAt[i].Load(); at > 0 {
			ats = append(ats, at)
		}
	}
	sort.Slice(ats, func(i, j int) bool { return ats[i] < ats[j] })
	if n := len(ats); n > 0 {
		r.P50Ms = float64(ats[n/2]) / 1e6
		r.P99Ms = float64(ats[min(n-1, n*99/100)]) / 1e6
		r.LastMs = float64(ats[n-1]) / 1e6
	}
	return r, nil
}

// hostPort returns the host:port of a ws:// URL.
func hostPort(u string) (string, error) {
	p, err := url.Parse(u)
	if err != nil || p.Scheme != "ws" || p.Host == "" {
		return "", fmt.Errorf("bench reconnect: %q is not a ws://host:port/path URL", u)
	}
	return p.Host, nil
}

// Summary is the run in a few lines.
func (r *ReconnectResult) Summary() string {
	return fmt.Sprintf("%s: %d clients, %d disconnected, %d back within the window; peak %d reconnects per %.0f ms; back after p50 %.0f ms, p99 %.0f ms, last %.0f ms; %d disconnect pushes named a delay (max %.0f ms)\n",
		r.Label, r.Conns, r.Lost, r.Back, r.Peak, r.BinMs, r.P50Ms, r.P99Ms, r.LastMs, r.Delayed, r.MaxDelayMs)
}
