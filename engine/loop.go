package engine

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsedge/wsedge/frame"
	"github.com/wsedge/wsedge/metrics"
	"github.com/wsedge/wsedge/protocol"
	"github.com/wsedge/wsedge/shard"
)

// loop is the per-event-loop shard of connection state. Everything in it is
// touched only by its gnet loop goroutine; other goroutines reach it with
// gnet's EventLoop.Execute.
type loop struct {
	srv   *Server
	idx   int // shard index in the hub
	el    gnet.EventLoop
	wheel wheel
	up    *upgrader

	scratch []byte    // frame assembly for writes, valid until the next write
	iov     [2][]byte // header and payload for writev

	// While OnTraffic runs for batch, its writes (replies, echoes, pongs)
	// gather in wbuf and leave in one write when the read is handled: a
	// client that pipelines commands costs one write per read, not one per
	// command.
	batch *conn
	wbuf  []byte

	pingTicks, idleTicks, hsTicks, closeTicks int64
	outboundTicks, refreshTicks               int64

	// Back-pressure (backpressure.go): connections whose reading is
	// stopped, and the epoll instance gnet polls for this loop (-1 if it
	// could not be found).
	paused []pausedConn
	epfd   int

	conns int // connections on this loop
	tally tally
	ops   loopOps // opsmetrics.go

	logBudget     int // connection summaries this tick may still log
	logSuppressed int

	// drain state: connections still to be sent 1001, spread over the grace.
	drainList  []*conn
	drainStart time.Time
	drainDone  int

	tickFn gnet.RunnableFunc

	// Channels and fan-out (protocol mode).
	inbox      *shard.Inbox[shard.Msg]
	inboxBytes atomic.Int64 // Frame.Cost of the messages in inbox; any goroutine
	index      *shard.Index[*subscription]
	drainFn    gnet.RunnableFunc
	waker      func() // replaces Execute in tests that drive a fake loop
	dec        protocol.Decoder
	cmd        protocol.Command
	out        []byte   // reply encoding, valid until the next reply
	chBuf      []byte   // a channel name being built (token subscriptions)
	touched    []*conn  // connections queued to since the last flush
	pending    []*conn  // connections whose queue waits for gnet to drain
	iovs       [][]byte // writev vector for queue flushes

	lastFlush time.Time // with FlushInterval: when the loop last wrote its subscribers

	subRetries []serverSubRetry // token subscriptions to try again (serversub.go)
	z          *loopDeflate     // permessage-deflate (deflate.go), made on first use
}

// inboxSize is the lock-free part of each loop's inbox; beyond it pushes go
// to an overflow list, never dropped.
const inboxSize = 4096

// wake schedules an inbox drain on the loop. Called by whoever made the
// inbox non-empty, from any goroutine. gnet's Execute allocates its own
// closure and queue node (TestWakeAllocs counts them): once per idle-to-busy
// transition of the inbox, not per message.
func (l *loop) wake() {
	if l.waker != nil {
		l.waker()
		return
	}
	_ = l.el.Execute(context.Background(), l.drainFn)
}

// tally counts on the loop goroutine without atomics; tick adds it to the
// shared metrics and resets it.
type tally struct {
	msgsIn, msgsOut, bytesIn, bytesOut uint64
	pings, idleClosed, protoErrors     uint64
	hsOK, hsFailed, hsTimeout, closed  uint64
	hsAborted, paused, authExpired     uint64
	commands, cmdErrors, deliveries    uint64
	slowClosed, lagDropped             uint64
}

func newLoop(s *Server, el gnet.EventLoop, idx int) *loop {
	cfg := &s.cfg
	ticks := func(d time.Duration) int64 { return int64((d + wheelTick - 1) / wheelTick) }
	span := max(cfg.IdleTimeout, cfg.HandshakeTimeout, cfg.CloseTimeout)
	l := &loop{
		srv:        s,
		idx:        idx,
		el:         el,
		wheel:      newWheel(span),
		up:         newUpgrader(cfg, s.auth),
		scratch:    make([]byte, 0, 16<<10),
		pingTicks:  ticks(cfg.PingInterval),
		idleTicks:  ticks(cfg.IdleTimeout),
		hsTicks:    ticks(cfg.HandshakeTimeout),
		closeTicks: ticks(cfg.CloseTimeout),
		epfd:       epollFD(el),
	}
	l.outboundTicks = ticks(cfg.OutboundTimeout)
	l.refreshTicks = ticks(cfg.RefreshWindow)
	l.wheel.now = s.tickNow()
	l.logBudget = connLogsPerTick
	l.tickFn = func(context.Context) error { l.tick(); return nil }
	l.inbox = shard.NewInbox[shard.Msg](inboxSize)
	l.index = shard.NewIndex[*subscription]()
	l.drainFn = func(context.Context) error { l.drainInbox(); return nil }
	l.out = make([]byte, 0, 4096)
	l.iovs = make([][]byte, 0, shard.MaxIOV)
	return l
}

// tick advances the wheel to the present, progresses a drain and publishes
// the loop's tallies. It runs on the loop goroutine.
func (l *loop) tick() {
	l.refillLogBudget()
	l.wheel.advance(l.srv.tickNow(), l.fire)
	if l.drainList != nil {
		l.drainStep()
	}
	if len(l.paused) > 0 {
		l.checkPaused()
	}
	l.runServerSubRetries()
	if ipl := l.srv.ipl; ipl != nil && l.idx == 0 {
		// One stripe of the per-address table per tick, by one loop.
		ipl.sweep()
	}
	if (len(l.touched) > 0 || len(l.pending) > 0) && l.flushDue() {
		l.flushAll()
	}
	l.flushTally()
	l.opsTick()
}

func (l *loop) flushTally() {
	m, t := l.srv.m, &l.tally
	m.MessagesIn.Add(int(t.msgsIn))
	m.MessagesOut.Add(int(t.msgsOut))
	m.BytesIn.Add(int(t.bytesIn))
	m.BytesOut.Add(int(t.bytesOut))
	m.PingsSent.Add(int(t.pings))
	m.IdleClosed.Add(int(t.idleClosed))
	m.ProtocolErrors.Add(int(t.protoErrors))
	m.Handshakes.Add(int(t.hsOK))
	m.HandshakeFailed.Add(int(t.hsFailed))
	m.HandshakeTimeout.Add(int(t.hsTimeout))
	m.HandshakeAborted.Add(int(t.hsAborted))
	m.Paused.Add(int(t.paused))
	m.AuthExpired.Add(int(t.authExpired))
	m.Closed.Add(int(t.closed))
	m.Commands.Add(int(t.commands))
	m.CommandErrors.Add(int(t.cmdErrors))
	m.Deliveries.Add(int(t.deliveries))
	m.SlowClosed.Add(int(t.slowClosed))
	m.LagDropped.Add(int(t.lagDropped))
	*t = tally{}
}

// fire handles a connection whose wheel deadline came due.
func (l *loop) fire(c *conn) {
	now := l.wheel.now
	switch c.state {
	case stateHandshake:
		l.tally.hsTimeout++
		l.endHandshake(c)
		_ = l.el.Close(c.gc)
	case stateOpen:
		if c.sess != nil && l.checkExpiry(c) {
			return
		}
		defer l.scheduleExpiry(c)
		if c.sess != nil && c.sess.inflight > 0 {
			// Not read because a broker call of its own is in flight:
			// its pongs wait in the socket because of us, not of it.
			// Silence counts from when reading resumes.
			c.lastSeen, c.pinged = now, false
		}
		idle := now - c.lastSeen
		switch {
		case idle >= l.idleTicks:
			// The peer is silent: most likely the network is gone, so
			// the close handshake is not waited for. 4008, not 1001,
			// so that a client whose network comes back does not take
			// it for a server shutdown (docs/PROTOCOL.md).
			l.tally.idleClosed++
			c.disconnect(protocol.DisconnectNoPong, "no pong", closeNoPong)
			if c.state != stateClosed {
				_ = l.el.Close(c.gc)
			}
		case idle >= l.pingTicks && !c.pinged:
			c.pinged = true
			l.tally.pings++
			// Browsers answer WebSocket pings but cannot see them, so
			// protocol clients also get an application-level ping push.
			if c.protocol && !c.writeFrame(frame.OpText, protocol.AppendPing(l.out[:0])) {
				return
			}
			if c.writeFrame(frame.OpPing, nil) {
				l.wheel.add(c, c.lastSeen+l.idleTicks)
			}
		case c.pinged:
			l.wheel.add(c, c.lastSeen+l.idleTicks)
		default:
			l.wheel.add(c, c.lastSeen+l.pingTicks)
		}
	case stateClosing:
		_ = l.el.Close(c.gc)
	}
}

// startDrain lists every connection on the loop; drainStep then sends them
// close 1001 spread evenly over the drain grace, so clients do not all
// reconnect in the same millisecond.
func (l *loop) startDrain() {
	l.drainStart = time.Now()
	l.drainList = make([]*conn, 0, l.conns)
	l.drainDone = 0
	l.wheel.each(func(c *conn) { l.drainList = append(l.drainList, c) })
	l.drainStep()
}

// The first connection goes at once and the last at (n-1)/n of the grace,
// so a drain of few connections ends as soon as they have closed, not at
// the end of the grace.
func (l *loop) drainStep() {
	grace := l.srv.cfg.DrainGrace
	n := len(l.drainList)
	due := n
	if elapsed := time.Since(l.drainStart); grace > 0 && elapsed < grace {
		due = min(n, int(int64(n)*int64(elapsed)/int64(grace))+1)
	}
	for ; l.drainDone < due; l.drainDone++ {
		c := l.drainList[l.drainDone]
		l.drainList[l.drainDone] = nil
		switch c.state {
		case stateHandshake:
			l.tally.hsFailed++
			l.srv.m.Rejected(metrics.RejectDraining).Inc()
			l.endHandshake(c)
			_ = l.el.Close(c.gc)
		case stateOpen:
			c.disconnectDelay(protocol.DisconnectShutdown, "server shutting down", frame.CloseGoingAway, l.srv.reconnectDelay())
		}
	}
	if l.drainDone == n {
		l.drainList = l.drainList[:0]
	}
}

// writeBatch hands the gathered writes of l.batch to gnet, keeping the
// batch open. It reports false if the connection closed on a write error.
func (l *loop) writeBatch() bool {
	c := l.batch
	if len(l.wbuf) == 0 {
		return c.state != stateClosed
	}
	b := l.wbuf
	l.wbuf = l.wbuf[:0]
	if cap(l.wbuf) > 1<<20 {
		l.wbuf = nil // one huge burst does not pin its buffer
	}
	if c.state == stateClosed {
		return false
	}
	if _, err := c.gc.Write(b); err != nil {
		return false
	}
	return c.state != stateClosed
}

// endBatch writes what the batch gathered and stops batching.
func (l *loop) endBatch() {
	if l.batch != nil {
		l.writeBatch()
		l.batch = nil
	}
}

// runnable adapts a func to gnet.Runnable.
func runnable(fn func()) gnet.RunnableFunc {
	return func(context.Context) error { fn(); return nil }
}
