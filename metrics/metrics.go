package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	vm "github.com/VictoriaMetrics/metrics"
)

// Metrics is the set of server metrics. Counters are created once here;
// the engine keeps per-loop tallies and adds them on each tick, so hot
// paths do not contend on these atomics.
type Metrics struct {
	Set *vm.Set

	// Every accepted socket ends in exactly one handshake result: ok,
	// failed (refused with an HTTP status, at accept or at the upgrade;
	// Rejected says why), timeout or aborted (the peer went away first).
	Accepted         *vm.Counter // TCP connections accepted
	Handshakes       *vm.Counter // successful upgrades
	HandshakeFailed  *vm.Counter // refused: at accept or at the upgrade
	HandshakeTimeout *vm.Counter
	HandshakeAborted *vm.Counter // the peer closed before the upgrade completed
	Closed           *vm.Counter // WebSocket connections closed after opening
	MessagesIn       *vm.Counter
	MessagesOut      *vm.Counter
	BytesIn          *vm.Counter
	BytesOut         *vm.Counter
	PingsSent        *vm.Counter
	IdleClosed       *vm.Counter
	ProtocolErrors   *vm.Counter // connections closed for 1002/1007/1009
	Commands         *vm.Counter // protocol commands received
	CommandErrors    *vm.Counter // commands answered with an error reply
	Publications     *vm.Counter // publications fanned out by this node
	Deliveries       *vm.Counter // publication frames queued to subscribers
	SlowClosed       *vm.Counter // connections closed by the slow-consumer policy
	LagDropped       *vm.Counter // frames dropped by the "lag" policy

	Paused          *vm.Counter // reading stopped because a connection's unsent replies were over the bound
	OverloadRefused *vm.Counter // publishes refused with "overloaded" because a target loop's inbox was full
	AuthExpired     *vm.Counter // connections closed (4004) for not refreshing an expired token
	StreamResets    *vm.Counter // reset pushes: a subscribed channel's history stream restarted with a new epoch
	DeliveryGaps    *vm.Counter // lagged pushes for publications that never reached this node (offset jumps)
	ServerSubRetry  *vm.Counter // token (subs claim) subscriptions the broker could not make, tried again

	// Ops are the metrics that explain the counters above (ops.go).
	Ops *Ops

	rejected map[RejectReason]*vm.Counter
	limited  map[LimitReason]*vm.Counter

	open atomic.Int64
	host *host
}

// RejectReason says why a handshake was refused; each has its own
// wsedge_rejected_total series.
type RejectReason string

// Handshake refusal reasons.
const (
	RejectFDCeiling     RejectReason = "fd_ceiling"       // the RLIMIT_NOFILE ceiling (503)
	RejectMaxConns      RejectReason = "max_conns"        // --max-conns, below the fd ceiling (503)
	RejectDraining      RejectReason = "draining"         // 503 during a drain
	RejectIPConns       RejectReason = "ip_conns"         // --max-conns-per-ip (429)
	RejectIPRate        RejectReason = "ip_rate"          // --handshake-rate-per-ip (429)
	RejectIPTableFull   RejectReason = "ip_table_full"    // too many distinct addresses tracked (429)
	RejectHeaderTooLong RejectReason = "header_too_large" // request over 8 KiB (431)
	RejectBadRequest    RejectReason = "bad_request"      // malformed request or headers (400)
	RejectNotFound      RejectReason = "not_found"        // another path (404)
	RejectMethod        RejectReason = "method"           // not GET (405)
	RejectVersion       RejectReason = "version"          // Sec-WebSocket-Version not 13 (426)
	RejectOrigin        RejectReason = "origin"           // Origin not allowed (403)
	RejectSubprotocol   RejectReason = "subprotocol"      // wsedge.v1.json not offered (400)
	RejectAuth          RejectReason = "auth"             // no valid token (401); wsedge_auth_refused_total says why
	RejectUserConns     RejectReason = "user_conns"       // --max-conns-per-user (429)
)

var rejectReasons = []RejectReason{
	RejectFDCeiling, RejectMaxConns, RejectDraining, RejectIPConns, RejectIPRate,
	RejectIPTableFull, RejectHeaderTooLong, RejectBadRequest, RejectNotFound,
	RejectMethod, RejectVersion, RejectOrigin, RejectSubprotocol, RejectAuth, RejectUserConns,
}

// LimitReason names an abuse limit that refused a command or closed a
// connection; each has its own wsedge_limited_total series.
type LimitReason string

// Limit reasons.
const (
	LimitCommandRate   LimitReason = "command_rate"       // a command answered 429
	LimitRateClose     LimitReason = "command_rate_close" // closed 1008 after persisting over the rate
	LimitSubs          LimitReason = "subs_per_conn"      // a subscribe over --max-subs-per-conn
	LimitOutboundClose LimitReason = "outbound_close"     // closed 1008: replies unread past --outbound-timeout
	LimitInboundClose  LimitReason = "inbound_close"      // closed 1008: unparsed input over its cap while paused
	LimitReplyCut      LimitReason = "reply_cut"          // a history or recovery reply cut to the outbound bound
)

var limitReasons = []LimitReason{
	LimitCommandRate, LimitRateClose, LimitSubs, LimitOutboundClose, LimitInboundClose, LimitReplyCut,
}

// Rejected returns the counter of handshakes refused for reason.
func (m *Metrics) Rejected(reason RejectReason) *vm.Counter { return m.rejected[reason] }

// Limited returns the counter of commands refused or connections closed
// by the abuse limit reason.
func (m *Metrics) Limited(reason LimitReason) *vm.Counter { return m.limited[reason] }

// New creates the metric set. The maps behind Rejected and Limited are
// filled here and only read afterwards, so any goroutine may use them.
func New() *Metrics {
	// # HELP and # TYPE lines, which Prometheus-format parsers expect. The
	// switch is the library's, process-wide.
	vm.ExposeMetadata(true)
	s := vm.NewSet()
	m := &Metrics{
		Set:              s,
		Accepted:         s.NewCounter(`wsedge_accepted_total`),
		Handshakes:       s.NewCounter(`wsedge_handshakes_total{result="ok"}`),
		HandshakeFailed:  s.NewCounter(`wsedge_handshakes_total{result="failed"}`),
		HandshakeTimeout: s.NewCounter(`wsedge_handshakes_total{result="timeout"}`),
		HandshakeAborted: s.NewCounter(`wsedge_handshakes_total{result="aborted"}`),
		Closed:           s.NewCounter(`wsedge_closed_total`),
		MessagesIn:       s.NewCounter(`wsedge_messages_total{dir="in"}`),
		MessagesOut:      s.NewCounter(`wsedge_messages_total{dir="out"}`),
		BytesIn:          s.NewCounter(`wsedge_bytes_total{dir="in"}`),
		BytesOut:         s.NewCounter(`wsedge_bytes_total{dir="out"}`),
		PingsSent:        s.NewCounter(`wsedge_pings_total`),
		IdleClosed:       s.NewCounter(`wsedge_idle_closed_total`),
		ProtocolErrors:   s.NewCounter(`wsedge_protocol_errors_total`),
		Commands:         s.NewCounter(`wsedge_commands_total`),
		CommandErrors:    s.NewCounter(`wsedge_command_errors_total`),
		Publications:     s.NewCounter(`wsedge_publications_total`),
		Deliveries:       s.NewCounter(`wsedge_deliveries_total`),
		SlowClosed:       s.NewCounter(`wsedge_slow_consumer_total{policy="close"}`),
		LagDropped:       s.NewCounter(`wsedge_slow_consumer_dropped_total{policy="lag"}`),
		Paused:           s.NewCounter(`wsedge_read_paused_total`),
		OverloadRefused:  s.NewCounter(`wsedge_overloaded_total`),
		AuthExpired:      s.NewCounter(`wsedge_auth_expired_total`),
		StreamResets:     s.NewCounter(`wsedge_stream_resets_total`),
		DeliveryGaps:     s.NewCounter(`wsedge_delivery_gaps_total`),
		ServerSubRetry:   s.NewCounter(`wsedge_token_subscription_retries_total`),
		rejected:         make(map[RejectReason]*vm.Counter, len(rejectReasons)),
		limited:          make(map[LimitReason]*vm.Counter, len(limitReasons)),
	}
	for _, r := range rejectReasons {
		m.rejected[r] = s.NewCounter(`wsedge_rejected_total{reason="` + string(r) + `"}`)
	}
	for _, r := range limitReasons {
		m.limited[r] = s.NewCounter(`wsedge_limited_total{reason="` + string(r) + `"}`)
	}
	s.NewGauge(`wsedge_connections`, func() float64 { return float64(m.open.Load()) })
	m.Ops = newOps(s)
	m.host = newHost("/")
	s.RegisterMetricsWriter(func(w io.Writer) { m.host.write(w, m.open.Load()) })
	return m
}

// AddOpen moves the open-connection gauge by d. Safe from any goroutine.
func (m *Metrics) AddOpen(d int64) int64 { return m.open.Add(d) }

// Open reports the open connection count (sockets accepted and not closed).
func (m *Metrics) Open() int64 { return m.open.Load() }

// WritePrometheus writes the set plus Go and process metrics. The set's
// host writer (host.go) adds the open fds and their limit.
func (m *Metrics) WritePrometheus(w io.Writer) {
	m.Set.WritePrometheus(w)
	vm.WriteProcessMetrics(w)
}

// Admin is the admin HTTP server.
type Admin struct {
	srv *http.Server
	ln  net.Listener
}

// maxAdminConns bounds admin connections so they cannot eat the fd reserve.
const maxAdminConns = 32

// StartAdmin listens on addr and serves /metrics, /healthz and /readyz;
// ready reports readiness. extra, if not nil, adds more routes. If the
// server stops on an error later, onError (if not nil) gets it once; the
// process goes on serving WebSocket clients without its admin port.
func StartAdmin(addr string, m *Metrics, ready func() bool, extra func(*http.ServeMux), onError func(error)) (*Admin, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: admin listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		m.WritePrometheus(w)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	// Profiles for operators; the admin port is internal by design.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	if extra != nil {
		extra(mux)
	}
	a := &Admin{
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second},
		ln:  &limitListener{Listener: ln, sem: make(chan struct{}, maxAdminConns)},
	}
	go func() {
		if err := a.srv.Serve(a.ln); err != nil && !errors.Is(err, http.ErrServerClosed) && onError != nil {
			onError(fmt.Errorf("metrics: admin server: %w", err))
		}
	}()
	return a, nil
}

// Addr is the address the admin server listens on.
func (a *Admin) Addr() string { return a.ln.Addr().String() }

// Close stops the admin server.
func (a *Admin) Close(ctx context.Context) error { return a.srv.Shutdown(ctx) }

// limitListener caps concurrent admin connections.
type limitListener struct {
	net.Listener
	sem chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	l.sem <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

type limitConn struct {
	net.Conn
	release func()
	done    atomic.Bool
}

func (c *limitConn) Close() error {
	if c.done.CompareAndSwap(false, true) {
		c.release()
	}
	return c.Conn.Close()
}
