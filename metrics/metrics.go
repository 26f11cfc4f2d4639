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

	Accepted         *vm.Counter // TCP connections accepted
	RejectedCeiling  *vm.Counter // refused because the fd ceiling was reached
	RejectedDraining *vm.Counter // refused because the server is draining
	Handshakes       *vm.Counter // successful upgrades
	HandshakeFailed  *vm.Counter // failed upgrades (bad request, timeout, ...)
	HandshakeTimeout *vm.Counter
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

	open atomic.Int64
}

// New creates the metric set. connections reports the open connection
// count for the gauge.
func New() *Metrics {
	s := vm.NewSet()
	m := &Metrics{
		Set:              s,
		Accepted:         s.NewCounter(`wsedge_accepted_total`),
		RejectedCeiling:  s.NewCounter(`wsedge_rejected_total{reason="fd_ceiling"}`),
		RejectedDraining: s.NewCounter(`wsedge_rejected_total{reason="draining"}`),
		Handshakes:       s.NewCounter(`wsedge_handshakes_total{result="ok"}`),
		HandshakeFailed:  s.NewCounter(`wsedge_handshakes_total{result="failed"}`),
		HandshakeTimeout: s.NewCounter(`wsedge_handshakes_total{result="timeout"}`),
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
	}
	s.NewGauge(`wsedge_connections`, func() float64 { return float64(m.open.Load()) })
	return m
}

// AddOpen moves the open-connection gauge by d. Safe from any goroutine.
func (m *Metrics) AddOpen(d int64) int64 { return m.open.Add(d) }

// Open reports the open connection count (sockets accepted and not closed).
func (m *Metrics) Open() int64 { return m.open.Load() }

// WritePrometheus writes the set plus Go and process metrics.
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
// ready reports readiness. extra, if not nil, adds more routes.
func StartAdmin(addr string, m *Metrics, ready func() bool, extra func(*http.ServeMux)) (*Admin, error) {
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
		if err := a.srv.Serve(a.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			panic("BUG: admin server: " + err.Error())
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
