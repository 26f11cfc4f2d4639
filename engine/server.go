package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/wsedge/wsedge/broker"
	"github.com/wsedge/wsedge/frame"
	"github.com/wsedge/wsedge/ingest"
	"github.com/wsedge/wsedge/metrics"
	"github.com/wsedge/wsedge/protocol"
	"github.com/wsedge/wsedge/shard"
	"github.com/wsedge/wsedge/tuning"
)

// tickInterval is how often gnet's ticker posts a tick to every loop.
const tickInterval = 50 * time.Millisecond

// app handles data messages outside echo mode. It runs on the connection's
// loop goroutine.
type app interface {
	OnMessage(c *conn, op frame.OpCode, payload []byte) error
}

// Server is a running wsedge server. Its methods are safe for concurrent use.
type Server struct {
	gnet.BuiltinEventEngine

	cfg      Config
	log      *slog.Logger
	m        *metrics.Metrics
	app      app
	limits   tuning.Limits
	maxConns int64
	start    time.Time

	mu    sync.Mutex
	loops map[gnet.EventLoop]*loop
	list  atomic.Pointer[[]*loop] // in creation order = shard index
	byIdx atomic.Pointer[[]*loop]

	ns            map[string]*Namespace
	hub           *shard.Hub
	bsubs         *brokerSubs
	bside         *brokerSide // nil while the broker never blocks: calls run on the loops
	auth          *authState
	ipl           *ipLimiter // nil when the per-address limits are off
	ceilingReason metrics.RejectReason
	broker        broker.Broker
	presence      broker.PresenceManager
	nextClientID  atomic.Uint64

	eng      gnet.Engine
	addr     string
	admin    *metrics.Admin
	booted   chan struct{}
	ing      *ingestServer // the ingest socket; nil without --ingest
	events   *eventLog     // connection events for ingest readers; nil without --ingest
	idem     *idemWindow   // idempotency keys of ingest and HTTP API publishes
	draining atomic.Bool
	ops      serverOps     // opsmetrics.go
	ho       *handoffState // handoff*.go
}

// New validates cfg and prepares a server; Run starts it.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Loops == 0 {
		cfg.Loops = runtime.GOMAXPROCS(0)
	}
	limits, err := tuning.RaiseNoFile()
	if err != nil {
		return nil, err
	}
	var (
		b  broker.Broker
		pm broker.PresenceManager
	)
	if cfg.Broker == "memory" {
		mem, merr := broker.NewMemory(broker.MemoryConfig{})
		if merr != nil {
			return nil, merr
		}
		b, pm = mem, mem
	} else {
		broker.SetRedisLogger(log)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r, rerr := broker.NewRedis(ctx, broker.RedisConfig{URL: cfg.Broker})
		cancel()
		if rerr != nil {
			return nil, fmt.Errorf("engine: broker %s: %w", cfg.Broker, rerr)
		}
		b, pm = r, r
	}
	s := &Server{
		cfg:      cfg,
		log:      log,
		m:        metrics.New(),
		app:      channelApp{},
		hub:      shard.NewHub(),
		bsubs:    newBrokerSubs(),
		broker:   b,
		presence: pm,
		ns:       make(map[string]*Namespace, len(cfg.Namespaces)),
		limits:   limits,
		start:    time.Now(),
		loops:    make(map[gnet.EventLoop]*loop),
		booted:   make(chan struct{}),
	}
	s.ho = newHandoffState(s.m.Set)
	s.maxConns = int64(limits.MaxConns(cfg.Loops))
	s.ceilingReason = metrics.RejectFDCeiling
	if cfg.MaxConns > 0 && int64(cfg.MaxConns) < s.maxConns {
		s.maxConns = int64(cfg.MaxConns)
		s.ceilingReason = metrics.RejectMaxConns
	}
	if cfg.MaxConnsPerIP > 0 || cfg.HandshakeRatePerIP > 0 {
		s.ipl = newIPLimiter(cfg.MaxConnsPerIP, cfg.HandshakeRatePerIP, cfg.HandshakeBurstPerIP, nil)
	}
	if s.auth, err = newAuthState(&s.cfg, s.m.Set); err != nil {
		return nil, err
	}
	for i := range s.cfg.Namespaces {
		s.ns[s.cfg.Namespaces[i].Name] = &s.cfg.Namespaces[i]
	}
	if cfg.Ingest.Listen != "" {
		s.events = newEventLog(cfg.Ingest.EventBuffer)
	}
	s.idem = newIdemWindow(cfg.Ingest.IdemWindow, cfg.Ingest.IdemMax)
	b.SetHandler(s.onPublication)
	s.initOps()
	empty := []*loop{}
	s.list.Store(&empty)
	s.byIdx.Store(&empty)
	return s, nil
}

// Metrics returns the server's metrics.
func (s *Server) Metrics() *metrics.Metrics { return s.m }

// Addr is the WebSocket listener's address once Run has booted.
func (s *Server) Addr() string { <-s.booted; return s.addr }

// AdminAddr is the admin listener's address once Run has booted, or "".
func (s *Server) AdminAddr() string {
	<-s.booted
	if s.admin == nil {
		return ""
	}
	return s.admin.Addr()
}

// Ready reports whether the server accepts new connections and, in a
// cluster, whether its broker is up (its data plane checked by canaries).
func (s *Server) Ready() bool {
	if s.draining.Load() {
		return false
	}
	if r, ok := s.broker.(interface{ Ready() bool }); ok {
		return r.Ready()
	}
	return true
}

func (s *Server) tickNow() int64 { return int64(time.Since(s.start) / wheelTick) }

// tickAt is the wheel tick of a Unix time in seconds (rounded up).
func (s *Server) tickAt(unix int64) int64 {
	d := time.Unix(unix, 0).Sub(s.start)
	return int64((d + wheelTick - 1) / wheelTick)
}

// Run serves until ctx is cancelled, then drains (see Drain) and returns.
func (s *Server) Run(ctx context.Context) error {
	addr, hold, err := reservePort(s.cfg.Listen)
	if err != nil {
		return err
	}
	s.addr = addr
	if s.cfg.Admin != "" {
		s.admin, err = metrics.StartAdmin(s.cfg.Admin, s.m, s.Ready, s.apiRoutes(), func(err error) {
			s.log.Error("admin server stopped; WebSocket service goes on", "err", err)
		})
		if err != nil {
			unix.Close(hold)
			return err
		}
	}
	switch {
	case s.cfg.Echo:
	case s.auth.v == nil:
		s.log.Warn("authentication is OFF (--insecure-no-auth): any client may subscribe and publish anywhere; for benchmarks and local development only")
	case s.auth.devSecret != "":
		s.log.Warn("auth: no key configured, tokens are checked against the development secret; do not use it in production",
			"secret_file", s.auth.devSecret,
			"mint_a_token", "wsedge token --sub alice --channels 'chat:*,user:{sub}' --publish 'chat:*'",
			"connect", "ws://"+addr+s.cfg.Path+"?token=<token> with subprotocol "+Subprotocol)
	}
	s.log.Info("limits",
		"nofile_soft", s.limits.NoFileSoft, "nofile_hard", s.limits.NoFileHard,
		"somaxconn", s.limits.Somaxconn, "port_range", fmt.Sprintf("%d-%d", s.limits.PortLow, s.limits.PortHigh),
		"max_conns", s.maxConns,
		"note", "connections beyond max_conns are refused with 503; raise RLIMIT_NOFILE (hard) to hold more")

	if nb, ok := s.broker.(interface{ NeverBlocks() bool }); !ok || !nb.NeverBlocks() {
		// The broker's calls can block: they leave the loops.
		s.bside = newBrokerSide(s)
	}
	if s.cfg.Ingest.Listen != "" {
		if s.ing, err = startIngest(s); err != nil {
			unix.Close(hold)
			s.stopServices()
			return err
		}
	}
	runErr := make(chan error, 1)
	go func() {
		runErr <- gnet.Run(s, "tcp://"+addr,
			gnet.WithMulticore(true),
			gnet.WithNumEventLoop(s.cfg.Loops),
			// Each loop accepts on its own SO_REUSEPORT listener, so accept
			// and OnOpen run back to back on one goroutine and the fd
			// ceiling in OnOpen is exact (DESIGN.md, "Connection lifecycle").
			gnet.WithReusePort(true),
			gnet.WithTicker(true),
			gnet.WithTCPNoDelay(gnet.TCPNoDelay),
			gnet.WithLogger(gnetLogger{s.log}),
		)
	}()
	select {
	case <-s.booted:
	case err := <-runErr:
		unix.Close(hold)
		return fmt.Errorf("engine: %w", err)
	}
	unix.Close(hold)
	adminAddr := ""
	if s.admin != nil {
		adminAddr = s.admin.Addr()
	}
	s.log.Info("listening", "ws", addr, "admin", adminAddr, "path", s.cfg.Path,
		"loops", s.cfg.Loops, "echo", s.cfg.Echo)

	select {
	case <-ctx.Done():
	case err := <-runErr:
		return fmt.Errorf("engine stopped: %w", err)
	}
	if s.ing != nil {
		s.ing.stop() // answered requests are flushed; unread ones are retried by their clients
	}
	s.Drain()
	stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.eng.Stop(stopCtx); err != nil {
		s.log.Warn("engine stop", "err", err)
	}
	<-runErr
	if s.admin != nil {
		_ = s.admin.Close(stopCtx)
	}
	if s.bside != nil {
		s.bside.close()
	}
	_ = s.broker.Close()
	s.auth.close()
	s.log.Info("stopped", "open", s.m.Open())
	return nil
}

// Drain stops accepting (new connections get 503), marks the server not
// ready, sends close 1001 to every connection spread over DrainGrace and
// waits until they are gone or the close timeout after the grace expires.
func (s *Server) Drain() {
	s.draining.Store(true)
	start := time.Now()
	s.log.Info("draining", "connections", s.m.Open(), "grace", s.cfg.DrainGrace.String())
	for _, l := range *s.list.Load() {
		_ = l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			l.startDrain()
			return nil
		}))
	}
	deadline := start.Add(s.cfg.DrainGrace + s.cfg.CloseTimeout + time.Second)
	for s.m.Open() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // a shutdown poll, not a test synchronisation
	}
	s.log.Info("drained", "left", s.m.Open(), "took", time.Since(start).Round(time.Millisecond))
}

// OnBoot implements gnet.EventHandler.
func (s *Server) OnBoot(eng gnet.Engine) gnet.Action {
	s.eng = eng
	close(s.booted)
	return gnet.None
}

// OnTick runs on gnet's ticker goroutine: it only posts a tick to each loop.
func (s *Server) OnTick() (time.Duration, gnet.Action) {
	s.ho.ticking() // the loops exist: OnBoot runs before gnet creates them
	for _, l := range *s.list.Load() {
		_ = l.el.Execute(context.Background(), l.tickFn)
	}
	return tickInterval, gnet.None
}

func (s *Server) loopFor(el gnet.EventLoop) *loop {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.loops[el]
	if l == nil {
		if len(s.loops) >= shard.MaxShards {
			panic("BUG: more event loops than hub shards")
		}
		l = newLoop(s, el, len(s.loops))
		s.loops[el] = l
		s.m.Set.NewGauge(fmt.Sprintf(`wsedge_inbox_depth{shard="%d"}`, l.idx), func() float64 { return float64(l.inbox.Len()) })
		s.m.Set.NewGauge(fmt.Sprintf(`wsedge_inbox_overflow_total{shard="%d"}`, l.idx), func() float64 { return float64(l.inbox.Overflowed()) })
		s.registerLoopOps(l)
		list := append(append([]*loop{}, *s.list.Load()...), l)
		s.list.Store(&list)
		s.byIdx.Store(&list)
	}
	return l
}

var (
	respDraining = httpError(http.StatusServiceUnavailable, "server draining")
	respCeiling  = httpError(http.StatusServiceUnavailable, "connection limit reached")
	respTooLarge = httpError(http.StatusRequestHeaderFieldsTooLarge, "request header over 8 KiB")
	respIPLimit  = httpError(http.StatusTooManyRequests, "too many connections or handshakes from this address")
)

// OnOpen implements gnet.EventHandler. It runs on the loop goroutine right
// after accept.
func (s *Server) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	if r, ok := gc.Context().(*restoring); ok {
		return s.openRestored(gc, r) // handed over by another process (handoff_recv.go)
	}
	s.m.Accepted.Inc()
	if s.draining.Load() {
		return s.refuse(gc, metrics.RejectDraining, respDraining)
	}
	if s.m.AddOpen(1) > s.maxConns {
		s.m.AddOpen(-1)
		return s.refuse(gc, s.ceilingReason, respCeiling)
	}
	ipCounted := false
	if s.ipl != nil {
		if ok, why := s.ipl.acquire(remoteIP(gc)); !ok {
			s.m.AddOpen(-1)
			return s.refuse(gc, metrics.RejectReason(why.String()), respIPLimit)
		}
		ipCounted = true
	}
	if s.cfg.SocketSendBuffer > 0 {
		_ = gc.SetWriteBuffer(s.cfg.SocketSendBuffer)
	}
	l := s.loopFor(gc.EventLoop())
	c := &conn{gc: gc, loop: l, lastSeen: l.wheel.now, opened: l.wheel.now, ipCounted: ipCounted}
	gc.SetContext(c)
	l.conns++
	l.wheel.add(c, l.wheel.now+l.hsTicks)
	return nil, gnet.None
}

// refuse answers a connection refused at accept and counts why.
func (s *Server) refuse(gc gnet.Conn, reason metrics.RejectReason, resp []byte) ([]byte, gnet.Action) {
	s.m.HandshakeFailed.Inc()
	s.m.Rejected(reason).Inc()
	s.logRefusal(gc, reason)
	return resp, gnet.Close
}

// logRefusal logs a refused handshake at debug level: browsers never show
// the response body, so this line is where a developer learns why.
func (s *Server) logRefusal(gc gnet.Conn, reason metrics.RejectReason) {
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.Debug("handshake refused", "reason", string(reason), "remote", gc.RemoteAddr().String())
	}
}

// remoteIP is the client address of gc (zero if it has none, e.g. a
// test connection).
func remoteIP(gc gnet.Conn) netip.Addr {
	if a, ok := gc.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr()
	}
	return netip.Addr{}
}

// OnClose implements gnet.EventHandler.
func (s *Server) OnClose(gc gnet.Conn, err error) gnet.Action {
	c, ok := gc.Context().(*conn)
	if !ok {
		return gnet.None // refused in OnOpen
	}
	l := c.loop
	if c.state == stateFrozen {
		l.closeFrozen(c) // handed over, or closed while being handed over (handoff.go)
		return gnet.None
	}
	switch c.state {
	case stateHandshake:
		if !c.hsCounted {
			l.tally.hsAborted++ // refusals and timeouts are counted where they happen
		}
	case stateOpen, stateClosing:
		l.tally.closed++
		l.countClose(c)
		l.logClose(c, err)
	}
	c.state = stateClosed
	l.wheel.remove(c)
	if c.sess != nil {
		l.closeSession(c)
		s.connEvent(ingest.EventDisconnect, c, "", c.closeCode, closedBy(c)) // after its unsubscribes
	}
	if c.ipCounted {
		s.ipl.release(remoteIP(gc))
	}
	if c.userCounted {
		s.auth.users.release(c.sess.user)
	}
	c.parser.Reset()
	l.conns--
	s.m.AddOpen(-1)
	gc.SetContext(nil)
	return gnet.None
}

// OnTraffic implements gnet.EventHandler: the handshake, then frames. The
// writes a read causes go out together when it is handled; if they leave
// the connection over its outbound bound, reading stops (backpressure.go).
func (s *Server) OnTraffic(gc gnet.Conn) gnet.Action {
	c, ok := gc.Context().(*conn)
	if !ok {
		return gnet.Close
	}
	l := c.loop
	l.batch = c
	act, pause := s.traffic(c, gc)
	l.endBatch()
	if pause && act == gnet.None {
		l.pause(c)
	}
	return act
}

// endHandshake marks a connection whose upgrade was refused or timed out
// (already counted) so that OnClose does not count it as aborted.
func (l *loop) endHandshake(c *conn) { c.hsCounted = true }

func (s *Server) traffic(c *conn, gc gnet.Conn) (act gnet.Action, pause bool) {
	l := c.loop
	buf, _ := gc.Peek(-1)
	c.lastSeen, c.pinged = l.wheel.now, false
	if c.broken {
		l.tally.bytesIn += uint64(len(buf))
		c.stats.bytesIn += uint64(len(buf))
		_, _ = gc.Discard(-1)
		if c.state == stateClosing && gc.OutboundBuffered() == 0 {
			// Our close frame has left since: end our side and stop
			// reading, as startClose does when it can at once.
			_ = unix.Shutdown(gc.Fd(), unix.SHUT_WR)
			l.setReading(c, false)
		}
		return gnet.None, false
	}
	// Not reading: a broker op of this connection is in flight, or its
	// unsent replies are over the bound. gnet re-armed reading (its
	// outbound buffer emptied) or we woke the connection after resuming it.
	busy := c.sess != nil && c.sess.inflight > 0
	if busy || c.paused && c.overBound() {
		if len(buf) > inboundPauseCap+s.cfg.MaxMessage {
			l.limitClose(c, metrics.LimitInboundClose, protocol.DisconnectNotReading, "input over limit while not reading", true)
			_, _ = gc.Discard(-1)
			return gnet.None, false
		}
		if busy {
			l.setReading(c, false) // handleOp reads it again
			return gnet.None, false
		}
		return gnet.None, true
	}
	c.paused = false // checkPaused drops its entry
	off := 0
	if c.state == stateHandshake {
		end := requestEnd(buf, int(c.hsScan))
		if end == 0 || end > maxRequestHeader {
			if len(buf) >= maxRequestHeader {
				l.tally.hsFailed++
				s.m.Rejected(metrics.RejectHeaderTooLong).Inc()
				s.logRefusal(gc, metrics.RejectHeaderTooLong)
				l.endHandshake(c)
				_, _ = gc.Write(respTooLarge)
				return gnet.Close, false
			}
			c.hsScan = uint16(len(buf))
			return gnet.None, false
		}
		resp, hs, err := l.up.upgrade(buf[:end])
		if err != nil {
			l.tally.hsFailed++
			reason := rejectReason(err)
			s.m.Rejected(reason).Inc()
			if reason == metrics.RejectAuth && s.log.Enabled(ctx, slog.LevelDebug) {
				s.log.Debug("handshake refused", "reason", string(reason), "auth", l.up.refusal.Label(),
					"remote", gc.RemoteAddr().String())
			} else {
				s.logRefusal(gc, reason)
			}
			l.endHandshake(c)
			c.write(resp)
			return gnet.Close, false
		}
		c.userCounted = l.up.counted
		c.state = stateOpen // before the write: OnClose releases what the upgrade took
		c.protocol = hs.Protocol == Subprotocol
		c.parser.SetDeflate(l.up.deflate)
		if c.protocol {
			sess := c.session()
			sess.id, sess.user = l.up.identity, l.up.identity.Sub()
		}
		if !c.write(resp) {
			return gnet.Close, false
		}
		if c.protocol {
			s.connEvent(ingest.EventConnect, c, "", 0, "")
			l.openSession(c) // after the 101: it may push
		}
		l.tally.hsOK++
		l.wheel.reschedule(c, c.lastSeen+l.pingTicks)
		l.scheduleExpiry(c)
		off = end
	}
	n, err := c.parser.Parse(buf[off:], s.cfg.MaxMessage, c)
	off += n
	l.tally.bytesIn += uint64(off)
	c.stats.bytesIn += uint64(off)
	if c.state == stateClosed {
		return gnet.None, false
	}
	if off > 0 {
		_, _ = gc.Discard(off) // Discard(0) would drop everything buffered
	}
	switch {
	case err == nil || err == errBusy:
		return gnet.None, false
	case err == errPause:
		return gnet.None, true
	}
	var fe *frame.Error
	if errors.As(err, &fe) {
		l.tally.protoErrors++
		c.startClose(fe.Code, fe.Reason, true)
		if c.state == stateClosing {
			_, _ = gc.Discard(-1)
			return gnet.None, false
		}
	}
	if c.state == stateClosing && c.broken {
		return gnet.None, false // closed by a limit: the close handshake runs its course
	}
	return gnet.Close, false
}

// reservePort resolves a ":0" port before gnet binds one SO_REUSEPORT
// listener per loop (each would otherwise get its own random port). It binds
// a socket with SO_REUSEPORT, without listening, to hold the port; the caller
// closes hold once gnet's listeners are up.
func reservePort(listen string) (addr string, hold int, err error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", -1, err
	}
	ip := net.ParseIP(host)
	if host == "" {
		ip = net.IPv4zero
	}
	if ip == nil {
		ips, err := net.LookupIP(host)
		if err != nil || len(ips) == 0 {
			return "", -1, fmt.Errorf("engine: listen host %q: %v", host, err)
		}
		ip = ips[0]
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return "", -1, fmt.Errorf("engine: listen port %q: %w", port, err)
	}
	family, sa := unix.AF_INET, unix.Sockaddr(nil)
	if ip4 := ip.To4(); ip4 != nil {
		a := &unix.SockaddrInet4{Port: p}
		copy(a.Addr[:], ip4)
		sa = a
	} else {
		family = unix.AF_INET6
		a := &unix.SockaddrInet6{Port: p}
		copy(a.Addr[:], ip.To16())
		sa = a
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", -1, fmt.Errorf("engine: socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		unix.Close(fd)
		return "", -1, fmt.Errorf("engine: SO_REUSEPORT: %w", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return "", -1, fmt.Errorf("engine: bind %s: %w", listen, err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return "", -1, err
	}
	switch a := got.(type) {
	case *unix.SockaddrInet4:
		p = a.Port
	case *unix.SockaddrInet6:
		p = a.Port
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(p)), fd, nil
}

// gnetLogger sends gnet's own log lines to slog.
type gnetLogger struct{ l *slog.Logger }

func (g gnetLogger) Debugf(f string, a ...any) { g.l.Debug(fmt.Sprintf(f, a...), "src", "gnet") }
func (g gnetLogger) Infof(f string, a ...any)  { g.l.Debug(fmt.Sprintf(f, a...), "src", "gnet") }
func (g gnetLogger) Warnf(f string, a ...any)  { g.l.Warn(fmt.Sprintf(f, a...), "src", "gnet") }
func (g gnetLogger) Errorf(f string, a ...any) { g.l.Error(fmt.Sprintf(f, a...), "src", "gnet") }
func (g gnetLogger) Fatalf(f string, a ...any) { g.l.Error(fmt.Sprintf(f, a...), "src", "gnet") }
