package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	vm "github.com/VictoriaMetrics/metrics"
	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/wsedge/wsedge/ingest"
	"github.com/wsedge/wsedge/shard"
)

// The ingest socket (docs/INGEST.md): internal services publish over a
// Unix socket in the binary protocol of package ingest and get an ack per
// request once the publication has its offset and is handed to the shards.
//
// It is served by a gnet engine of its own, not by the WebSocket engine:
// gnet turns SO_REUSEPORT off for every listener of an engine that has a
// unix one, which would take the WebSocket listener's per-loop accept (and
// its ":0" port reservation) away. The ingest engine runs IngestConfig.Loops
// loops (one by default) plus gnet's acceptor and ticker: a constant number
// of goroutines, none per ingest connection or request.
//
// A publish goes through the same path as a WebSocket client's: the
// admission check (Server.overloaded), broker.Publish (offset assignment,
// history), and the broker's handler Server.onPublication (encode once,
// post to each loop's inbox). With a broker that never blocks (Memory) the
// publish runs inline on the ingest loop; with any other it is a brokerOp
// on the broker side's workers, completed through the ingest loop's inbox,
// one at a time per ingest connection so that its publications keep their
// order.

// ingestServer is the ingest engine's event handler. Its gnet callbacks run
// on the ingest loops; stop runs on the server's Run goroutine.
type ingestServer struct {
	gnet.BuiltinEventEngine

	s          *Server
	cfg        *IngestConfig
	path       string
	maxPayload int

	eng     gnet.Engine
	booted  chan struct{}
	mu      sync.Mutex
	loops   map[gnet.EventLoop]*ingestLoop
	list    atomic.Pointer[[]*ingestLoop]
	conns   atomic.Int64
	closing atomic.Bool

	m ingestMetrics
}

type ingestMetrics struct {
	acks, errors, dups, malformed, waits *vm.Counter
}

// ingestLoop is one ingest event loop's state, touched only on its
// goroutine (inbox: any goroutine pushes).
type ingestLoop struct {
	srv     *ingestServer
	el      gnet.EventLoop
	epfd    int
	req     ingest.Request
	out     []byte            // responses of the read being handled
	names   map[string]string // interned channel names (bounded, see intern)
	waiting []*ingestConn     // connections not read: overload, unread responses, events
	inbox   *shard.Inbox[*ingestOp]
	drainFn gnet.RunnableFunc
	tickFn  gnet.RunnableFunc
	evConns []*ingestConn            // connections reading the event stream
	all     map[*ingestConn]struct{} // every open connection, for the stop's flush wait
}

// ingestConn is one ingest connection, owned by its loop.
type ingestConn struct {
	gc        gnet.Conn
	il        *ingestLoop
	waitSince time.Time // a publish waits for full inboxes since then (zero: not)
	inflight  int       // async broker ops in flight
	readOff   bool      // its fd is not registered for reading
	listed    bool      // in il.waiting
	closing   bool      // a fatal error was answered; input is discarded
	stop      bool      // the parse stopped for unread responses or a broker op: wait after the write
	closed    bool
	events    bool   // reads the event stream
	evNext    uint64 // number of the next event it gets
}

const ingestTick = 10 * time.Millisecond

func newIngestServer(s *Server) *ingestServer {
	cfg := &s.cfg.Ingest
	is := &ingestServer{
		s:          s,
		cfg:        cfg,
		path:       cfg.socketPath(),
		maxPayload: cfg.payloadLimit(s.cfg.MaxMessage),
		booted:     make(chan struct{}),
		loops:      make(map[gnet.EventLoop]*ingestLoop),
	}
	set := s.m.Set
	is.m = ingestMetrics{
		acks:      set.NewCounter(`wsedge_ingest_requests_total{result="ack"}`),
		errors:    set.NewCounter(`wsedge_ingest_requests_total{result="error"}`),
		dups:      set.NewCounter(`wsedge_ingest_duplicates_total`),
		malformed: set.NewCounter(`wsedge_ingest_malformed_total`),
		waits:     set.NewCounter(`wsedge_ingest_read_paused_total`),
	}
	set.NewGauge(`wsedge_ingest_connections`, func() float64 { return float64(is.conns.Load()) })
	set.NewGauge(`wsedge_ingest_idem_keys`, func() float64 { return float64(s.idem.len()) })
	set.NewGauge(`wsedge_ingest_idem_evicted_total`, func() float64 { return float64(s.idem.evicted.Load()) })
	empty := []*ingestLoop{}
	is.list.Store(&empty)
	return is
}

// ErrSocketInUse is returned when another process serves the ingest
// socket's path.
var ErrSocketInUse = errors.New("engine: ingest socket in use by another process")

// claimSocketPath makes path free for our listener: nothing there, or a
// stale socket left by a process that died (nobody accepts on it), which
// gnet then replaces. A live socket or any other kind of file is refused:
// gnet's listener would remove whatever is at the path.
func claimSocketPath(path string) (stale bool, err error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("engine: ingest socket %s: %w", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return false, fmt.Errorf("engine: ingest socket %s: exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return false, fmt.Errorf("%w: %s", ErrSocketInUse, path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return false, fmt.Errorf("engine: ingest socket %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return false, fmt.Errorf("engine: stale ingest socket %s: %w", path, err)
	}
	return true, nil
}

// startIngest listens on the ingest socket. The file is created with mode
// 0660 (umask 0117 while gnet binds it) and handed to IngestConfig.Group.
func startIngest(s *Server) (*ingestServer, error) {
	is := newIngestServer(s)
	gid := -1
	if g := is.cfg.Group; g != "" {
		grp, err := user.LookupGroup(g)
		if err != nil {
			return nil, fmt.Errorf("engine: ingest group: %w", err)
		}
		if gid, err = strconv.Atoi(grp.Gid); err != nil {
			return nil, fmt.Errorf("engine: ingest group %s: gid %q", g, grp.Gid)
		}
	}
	stale, err := claimSocketPath(is.path)
	if err != nil {
		return nil, err
	}
	if stale {
		s.log.Warn("removed a stale ingest socket (a previous process did not exit cleanly)", "path", is.path)
	}
	loops := max(is.cfg.Loops, 1)
	runErr := make(chan error, 1)
	old := unix.Umask(0o117)
	go func() {
		runErr <- gnet.Run(is, "unix://"+is.path,
			gnet.WithMulticore(true),
			gnet.WithNumEventLoop(loops),
			gnet.WithTicker(true),
			gnet.WithLogger(gnetLogger{s.log}),
		)
	}()
	select {
	case <-is.booted:
		unix.Umask(old)
	case err := <-runErr:
		unix.Umask(old)
		return nil, fmt.Errorf("engine: ingest: %w", err)
	}
	if err := os.Chmod(is.path, 0o660); err != nil {
		is.stop()
		return nil, fmt.Errorf("engine: ingest socket mode: %w", err)
	}
	if gid >= 0 {
		if err := os.Chown(is.path, -1, gid); err != nil {
			is.stop()
			return nil, fmt.Errorf("engine: ingest socket group: %w", err)
		}
	}
	go func() {
		if err := <-runErr; err != nil {
			s.log.Error("ingest engine stopped", "err", err)
		}
	}()
	s.log.Info("ingest listening", "socket", is.path, "loops", loops, "mode", "0660", "group", is.cfg.Group)
	return is, nil
}

// stop refuses new requests, closes every ingest connection (their
// answered requests are flushed first) and removes the socket file.
func (is *ingestServer) stop() {
	is.closing.Store(true)
	is.awaitFlushed(3 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := is.eng.Stop(ctx); err != nil {
		is.s.log.Warn("ingest stop", "err", err)
	}
	_ = os.Remove(is.path) // gnet removes it too; a leftover would only be stale
	// gnet keeps every engine it ran, with its handler, in a global map
	// keyed by address (for its deprecated gnet.Stop), so a stopped ingest
	// server lets go of the Server and its loops: a process that runs
	// servers one after another (tests) does not keep them all. The loops
	// have exited; nothing reads these any more.
	is.mu.Lock()
	is.loops = nil
	is.mu.Unlock()
	empty := []*ingestLoop{}
	is.list.Store(&empty)
	is.s = nil
}

// OnBoot implements gnet.EventHandler.
func (is *ingestServer) OnBoot(eng gnet.Engine) gnet.Action {
	is.eng = eng
	close(is.booted)
	return gnet.None
}

// OnTick runs on gnet's ticker goroutine and only posts a tick to each loop.
func (is *ingestServer) OnTick() (time.Duration, gnet.Action) {
	for _, il := range *is.list.Load() {
		_ = il.el.Execute(context.Background(), il.tickFn)
	}
	return ingestTick, gnet.None
}

func (is *ingestServer) loopFor(el gnet.EventLoop) *ingestLoop {
	is.mu.Lock()
	defer is.mu.Unlock()
	il := is.loops[el]
	if il == nil {
		il = &ingestLoop{
			srv:   is,
			el:    el,
			epfd:  epollFD(el),
			names: make(map[string]string),
			out:   make([]byte, 0, 64<<10),
			inbox: shard.NewInbox[*ingestOp](1024),
		}
		if il.epfd < 0 {
			is.s.log.Warn("ingest: gnet's epoll fd not found; reading of a waiting ingest connection cannot be stopped in the kernel")
		}
		il.drainFn = func(context.Context) error { il.drain(); return nil }
		il.tickFn = func(context.Context) error { il.tick(); return nil }
		is.loops[el] = il
		list := append(append([]*ingestLoop{}, *is.list.Load()...), il)
		is.list.Store(&list)
	}
	return il
}

// OnOpen implements gnet.EventHandler.
func (is *ingestServer) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	if is.closing.Load() {
		return ingest.AppendError(nil, 0, ingest.CodeShuttingDown, ingest.CodeShuttingDown.String()), gnet.Close
	}
	is.conns.Add(1)
	c := &ingestConn{gc: gc, il: is.loopFor(gc.EventLoop())}
	if c.il.all == nil {
		c.il.all = make(map[*ingestConn]struct{})
	}
	c.il.all[c] = struct{}{}
	gc.SetContext(c)
	return nil, gnet.None
}

// OnClose implements gnet.EventHandler. Requests whose async broker op is
// in flight complete without an ack (the client retries them).
func (is *ingestServer) OnClose(gc gnet.Conn, _ error) gnet.Action {
	if c, ok := gc.Context().(*ingestConn); ok {
		c.closed = true
		delete(c.il.all, c)
		is.conns.Add(-1)
		gc.SetContext(nil)
	}
	return gnet.None
}

// OnTraffic implements gnet.EventHandler: it parses and answers every
// whole request gnet holds, in order, and writes their responses in one
// write. It stops early (the rest waits in gnet's buffer, and the socket
// is not read meanwhile) when a publish must wait for full shard inboxes,
// when an async broker op of the connection is in flight, or when the
// connection has left more than MaxOutbound of responses unread.
func (is *ingestServer) OnTraffic(gc gnet.Conn) gnet.Action {
	c, ok := gc.Context().(*ingestConn)
	if !ok {
		return gnet.Close
	}
	if c.closing {
		_, _ = gc.Discard(-1)
		return gnet.None
	}
	il := c.il
	buf, _ := gc.Peek(-1)
	il.out = il.out[:0]
	off, act := 0, gnet.None
	for off < len(buf) {
		if c.inflight > 0 || gc.OutboundBuffered()+len(il.out) > is.cfg.MaxOutbound {
			c.stop = true
			break
		}
		n, err := ingest.ParseRequest(buf[off:], is.cfg.MaxFrame, &il.req)
		if err == ingest.ErrUnknownOp {
			il.fail(il.req.Seq, ingest.CodeUnknownOp)
			off += n
			continue
		}
		if err != nil {
			// The stream cannot be parsed further: answer, close, and
			// keep what was answered before (it is in il.out).
			is.m.malformed.Inc()
			il.fail(0, ingest.CodeOf(err))
			c.closing = true
			off = len(buf)
			act = gnet.Close
			break
		}
		if n == 0 {
			if len(buf)-off > is.cfg.MaxFrame {
				panic("BUG: ingest frame over MaxFrame buffered")
			}
			break
		}
		if !il.handle(c, &il.req) {
			break // waits; the request is parsed again when it resumes
		}
		off += n
	}
	if off > 0 {
		_, _ = gc.Discard(off)
	}
	if len(il.out) > 0 {
		_, _ = gc.Write(il.out)
	}
	// After the write: a partial write makes gnet register the fd for
	// reading and writing, which must not undo a stop.
	switch {
	case c.stop:
		c.stop = false
		il.wait(c)
	case c.readOff && c.inflight == 0 && c.waitSince.IsZero() && !c.overOut():
		il.reading(c, true)
	case c.readOff:
		il.reading(c, false)
	}
	if cap(il.out) > 1<<20 {
		il.out = make([]byte, 0, 64<<10)
	}
	return act
}

func (c *ingestConn) overOut() bool {
	return c.gc.OutboundBuffered() > c.il.srv.cfg.MaxOutbound
}

// wait stops reading c until tick (or its broker op) resumes it. Called
// outside the parse (the request that waits sets c.stop or waitSince).
func (il *ingestLoop) wait(c *ingestConn) {
	il.reading(c, false)
	if !c.listed {
		c.listed = true
		il.waiting = append(il.waiting, c)
		il.srv.m.waits.Inc()
	}
}

// reading registers c's fd in the ingest loop's epoll for reading or not
// (see backpressure.go for why gnet has no call for it). Turning reading
// off is always done again: gnet itself re-registers a connection for
// reading after a partial write or when its outbound buffer empties.
// Without the epoll fd (logged at start) reading cannot stop in the kernel
// and a waiting connection's input gathers in gnet's buffer.
func (il *ingestLoop) reading(c *ingestConn, on bool) {
	if on && !c.readOff {
		return
	}
	c.readOff = !on
	if il.epfd < 0 || c.closed {
		return
	}
	fd := c.gc.Fd()
	var ev uint32
	if on {
		ev = unix.EPOLLIN | unix.EPOLLPRI
	}
	if c.gc.OutboundBuffered() > 0 {
		ev |= unix.EPOLLOUT
	}
	_ = unix.EpollCtl(il.epfd, unix.EPOLL_CTL_MOD, fd, &unix.EpollEvent{Fd: int32(fd), Events: ev})
}

// tick resumes waiting connections (their input is parsed again, so a
// publish that still finds full inboxes waits on, up to OverloadWait) and
// feeds the event stream.
func (il *ingestLoop) tick() {
	keep := il.waiting[:0]
	for _, c := range il.waiting {
		if c.closed || c.closing {
			c.listed = false
			continue
		}
		if c.inflight > 0 || c.overOut() {
			keep = append(keep, c)
			continue
		}
		c.listed = false
		if c.waitSince.IsZero() {
			il.reading(c, true)
		}
		_ = c.gc.Wake(nil)
	}
	clear(il.waiting[len(keep):])
	il.waiting = keep
	if len(il.evConns) > 0 {
		il.feedEvents()
	}
}

// fail appends an error response and counts it.
func (il *ingestLoop) fail(seq uint64, code ingest.Code) {
	il.srv.m.errors.Inc()
	il.out = ingest.AppendError(il.out, seq, code, code.String())
}

// ack appends an acknowledgement and counts it.
func (il *ingestLoop) ack(seq, offset uint64, epoch string, flags byte) {
	il.srv.m.acks.Inc()
	il.out = ingest.AppendAck(il.out, seq, offset, epoch, flags)
}

// intern returns channel as a string without allocating once the loop has
// seen it. The table is dropped when it reaches maxInterned names, so a
// client naming fresh channels costs at most that many.
func (il *ingestLoop) intern(channel []byte) string {
	if s, ok := il.names[string(channel)]; ok {
		return s
	}
	if len(il.names) >= maxInterned {
		clear(il.names)
	}
	s := string(channel)
	il.names[s] = s
	return s
}

const maxInterned = 4096

// stopServices releases what Run started before the engine when the
// ingest socket cannot start: the admin server and the broker side.
func (s *Server) stopServices() {
	if s.admin != nil {
		_ = s.admin.Close(context.Background())
	}
	if s.bside != nil {
		s.bside.close()
	}
}

// awaitFlushed waits, at most d, until no ingest connection has a broker op
// in flight or responses gnet has not written: gnet's close writes what it
// holds once and drops the rest when the peer's socket is full, and an ack
// dropped there makes the client publish again on the next server (a
// duplicate). New requests are already refused (closing).
func (is *ingestServer) awaitFlushed(d time.Duration) {
	deadline := time.Now().Add(d)
	for {
		is.mu.Lock()
		loops := make([]*ingestLoop, 0, len(is.loops))
		for _, il := range is.loops {
			loops = append(loops, il)
		}
		is.mu.Unlock()
		var busy atomic.Int64
		var wg sync.WaitGroup
		for _, il := range loops {
			wg.Add(1)
			err := il.el.Execute(context.Background(), runnable(func() {
				defer wg.Done()
				for c := range il.all {
					if c.inflight > 0 || c.gc.OutboundBuffered() > 0 {
						busy.Add(1)
					}
				}
			}))
			if err != nil {
				wg.Done()
			}
		}
		wg.Wait()
		if busy.Load() == 0 || time.Now().After(deadline) {
			return
		}
		time.Sleep(5 * time.Millisecond) // polling the loops while they flush
	}
}
