package engine

import (
	"os"
	"reflect"
	"strconv"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/wsedge/wsedge/frame"
	"github.com/wsedge/wsedge/metrics"
	"github.com/wsedge/wsedge/protocol"
)

// Back-pressure on a connection's own writes (DESIGN.md, "Back-pressure on
// what a client causes"). Replies, echoes and pongs go to gnet, whose
// outbound buffer has no bound. So after every message the loop looks at
// what the connection has not yet sent; over MaxOutboundBytes it stops
// parsing and stops reading the socket, so the client's further requests
// wait in the kernel (its send buffer, our receive buffer, then TCP flow
// control), not in our memory. The tick resumes the connection once its
// peer has read enough, or closes it (1008) after OutboundTimeout.
//
// gnet has no call to stop reading a connection. The loop therefore
// changes the connection's epoll registration itself, on the epoll
// instance gnet polls (found once per loop, see epollFD). gnet re-arms
// reading when its own outbound buffer empties (epoll_ctl MOD to EPOLLIN):
// by then the connection's unsent bytes are at most its publication queue,
// which has its own bound, so the next read resumes it anyway. Bytes gnet
// reads while a connection is paused are not parsed; past inboundPauseCap
// the connection is closed (1008).

// inboundPauseCap bounds the unparsed input a paused connection may hold in
// gnet's inbound buffer (beyond one message being assembled, which the
// parser bounds by MaxMessage): a few of gnet's 64 KiB reads.
const inboundPauseCap = 256 << 10

// closeNoPong, closeNotReading: application close codes (docs/PROTOCOL.md).
const (
	closeNoPong frame.CloseCode = 4008
)

// unsent is what the connection has caused us to hold for it and not sent:
// gnet's outbound buffer and, during its read, the batch gathered in
// l.wbuf. Publications waiting in its queue are bounded separately.
func (c *conn) unsent() int {
	n := c.gc.OutboundBuffered()
	if c.loop.batch == c {
		n += len(c.loop.wbuf)
	}
	return n
}

// overBound reports whether reading from c must stop.
func (c *conn) overBound() bool {
	return c.unsent() > c.loop.srv.cfg.MaxOutboundBytes
}

// pausedConn is a connection whose reading is stopped, and since when.
type pausedConn struct {
	c     *conn
	since int64 // wheel tick
}

// pause stops reading from c, after its batch has been written. If the
// socket took enough of it that c is under the bound again, c is not
// paused: the rest of its input is parsed on a later turn (Wake).
func (l *loop) pause(c *conn) {
	if c.state == stateClosed {
		return
	}
	if !c.overBound() {
		if c.gc.InboundBuffered() > 0 {
			_ = c.gc.Wake(nil)
		}
		return
	}
	if !c.paused {
		c.paused = true
		l.paused = append(l.paused, pausedConn{c: c, since: l.wheel.now})
		l.tally.paused++
	}
	l.setReading(c, false)
}

// resume starts reading c again and parses what gnet already holds.
func (l *loop) resume(c *conn) {
	c.paused = false
	if c.sess != nil && c.sess.inflight > 0 {
		return // handleOp resumes it when its broker op is back
	}
	l.setReading(c, true)
	if c.gc.InboundBuffered() > 0 {
		_ = c.gc.Wake(nil)
	}
}

// setReading registers c's fd for reading (and writing while gnet holds
// output) or for writing only. Without the epoll fd (not found, or a test
// connection) reading is not stopped in the kernel; the bound still holds
// because paused input is not parsed and is capped by inboundPauseCap.
func (l *loop) setReading(c *conn, on bool) {
	if l.epfd < 0 {
		return
	}
	fd := c.gc.Fd()
	if fd < 0 {
		return
	}
	var ev uint32
	if on {
		ev = unix.EPOLLIN | unix.EPOLLPRI
	}
	if c.gc.OutboundBuffered() > 0 {
		ev |= unix.EPOLLOUT
	}
	// gnet identifies the connection by the fd in the event's data.
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, fd, &unix.EpollEvent{Fd: int32(fd), Events: ev})
}

// checkPaused runs on each tick: it resumes connections whose peer has read
// enough and closes those that stayed over the bound for OutboundTimeout.
func (l *loop) checkPaused() {
	keep := l.paused[:0]
	for _, p := range l.paused {
		c := p.c
		switch {
		case c.state == stateClosed || !c.paused:
			c.paused = false
			continue
		case !c.overBound():
			l.resume(c)
			continue
		case l.wheel.now-p.since >= l.outboundTicks:
			l.limitClose(c, metrics.LimitOutboundClose, protocol.DisconnectNotReading, "not reading replies", false)
			c.paused = false
			continue
		}
		keep = append(keep, p)
	}
	clear(l.paused[len(keep):])
	l.paused = keep
}

// limitClose ends a connection that broke an abuse limit: a disconnect
// push for protocol clients, close 1008, and the socket is closed when the
// peer answers or at the close timeout. Data messages that follow are
// ignored (the connection is closing); with discard the input is not even
// parsed any more (it is over its own bound), so only the timeout ends it.
func (l *loop) limitClose(c *conn, reason metrics.LimitReason, code protocol.DisconnectCode, text string, discard bool) {
	l.srv.m.Limited(reason).Inc()
	c.disconnect(code, text, frame.ClosePolicyViolation)
	c.broken = c.broken || discard
}

// epollFD returns the epoll instance that gnet polls for el, or -1. gnet
// does not export it; it is read from the event loop's poller by
// reflection (gnet v2's eventloop.poller.fd) and checked against
// /proc/self/fd, so a gnet that changes its layout makes this -1 and the
// server logs that reading cannot be paused, rather than misbehaving.
func epollFD(el gnet.EventLoop) int {
	if el == nil {
		return -1
	}
	v := reflect.ValueOf(el)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return -1
	}
	p := v.Elem().FieldByName("poller")
	if p.Kind() != reflect.Pointer || p.IsNil() || p.Elem().Kind() != reflect.Struct {
		return -1
	}
	f := p.Elem().FieldByName("fd")
	if f.Kind() != reflect.Int {
		return -1
	}
	fd := int(f.Int())
	if link, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd)); err != nil || link != "anon_inode:[eventpoll]" {
		return -1
	}
	return fd
}
