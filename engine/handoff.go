package engine

import (
	"reflect"
	"unsafe"

	"github.com/panjf2000/gnet/v2"
	"github.com/panjf2000/gnet/v2/pkg/buffer/elastic"
	"golang.org/x/sys/unix"

	"github.com/wsedge/wsedge/broker"
	"github.com/wsedge/wsedge/frame"
	"github.com/wsedge/wsedge/handoff"
	"github.com/wsedge/wsedge/protocol"
)

// The connection handoff, loop side (docs/DESIGN.md, "Handoff"). A
// connection being handed over is frozen on its loop: its queue is
// written, its fd leaves epoll reading, it leaves the heartbeat wheel, and
// its state (stateFrozen) makes every path that would read or write it
// stand still: publications for it are dropped (they are recovered from
// history by whoever resumes it). A frozen connection is then either
// released (the new process acknowledged it: the loop closes its own
// descriptor, which sends nothing on a socket another process holds) or
// thawed (the new process refused it or died: the loop resumes it and
// recovers its subscriptions from their last delivered offsets). The new
// process enrolls each descriptor frozen too and activates it only after
// its acknowledgement is sent, so at any moment exactly one process reads
// and writes a socket.

// freeze writes c's record (with seq) into rec and returns a duplicate of
// its descriptor, or ok false if c cannot leave yet (not open, a broker op
// or a held subscribe in flight, or output gnet has not sent; fd is
// fdsExhausted if the process is out of descriptors for the duplicate).
// On the loop goroutine.
func (l *loop) freeze(c *conn, seq uint32, rec *handoff.Conn) (fd int, ok bool) {
	if c.state != stateOpen || c.paused {
		return -1, false
	}
	sess := c.sess
	if sess != nil {
		if sess.inflight > 0 {
			return -1, false
		}
		for _, s := range sess.subs {
			if s.Conn.hold != nil {
				return -1, false
			}
		}
		if sess.q.Len() > 0 {
			l.flush(c)
			if c.state != stateOpen || sess.q.Len() > 0 {
				return -1, false
			}
		}
	}
	if c.gc.OutboundBuffered() > 0 {
		return -1, false
	}
	fd, err := unix.FcntlInt(uintptr(c.gc.Fd()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		if err == unix.EMFILE || err == unix.ENFILE {
			return fdsExhausted, false
		}
		return -1, false
	}
	now := l.wheel.now
	*rec = handoff.Conn{
		Seq:      seq,
		IdleMs:   uint32(min(max(now-c.lastSeen, 0)*int64(wheelTick/1e6), 1<<31)),
		AgeMs:    uint64(max(now-c.opened, 0) * int64(wheelTick/1e6)),
		BytesIn:  c.stats.bytesIn,
		BytesOut: c.stats.bytesOut,
		MsgsIn:   c.stats.msgsIn,
		MsgsOut:  c.stats.msgsOut,
		Parser:   c.parser.AppendState(rec.Parser[:0]),
		CmdDebt:  c.bucket.debt,
		Subs:     rec.Subs[:0],
	}
	if in, _ := c.gc.Peek(-1); len(in) > 0 {
		rec.Inbound = in // copied by AppendConn before the loop reads again
	}
	if c.pinged {
		rec.Flags |= handoff.FlagPinged
	}
	if c.protocol {
		rec.Flags |= handoff.FlagProtocol
	}
	if sess != nil {
		rec.ClientID = sess.cid
		rec.Identity = sess.id.AppendBinary(nil)
		rec.RefreshMs = -1
		if sess.refreshBy > 0 {
			rec.RefreshMs = max(sess.refreshBy-now, 0) * int64(wheelTick/1e6)
		}
		for _, s := range sess.subs {
			sub := s.Conn
			rec.Subs = append(rec.Subs, handoff.Sub{Channel: s.Channel(), Offset: sub.last, Epoch: sub.epoch, Lagging: sub.lagging})
		}
		if c.userCounted {
			rec.Flags |= handoff.FlagUserCounted
		}
	}
	l.setFrozen(c)
	return fd, true
}

// fdsExhausted is freeze's fd when no descriptor is left for the duplicate:
// the round stops, and the next one goes on once sent batches are released.
const fdsExhausted = -2

// setFrozen stops reading c and takes it out of the wheel.
func (l *loop) setFrozen(c *conn) {
	if l.epfd >= 0 {
		if fd := c.gc.Fd(); fd >= 0 {
			// No events: EPOLLHUP and EPOLLERR still report a peer that
			// goes away meanwhile.
			_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, fd, &unix.EpollEvent{Fd: int32(fd)})
		}
	}
	l.wheel.remove(c)
	c.state = stateFrozen
}

// release closes a frozen connection that the new process acknowledged:
// gnet closes this process's descriptor, the socket lives on in the other.
func (l *loop) release(c *conn) {
	if c.state != stateFrozen {
		return // the peer closed it meanwhile
	}
	c.handedOver()
	_ = l.el.Close(c.gc)
}

// handedOver marks c as gone to the other process for closeFrozen.
func (c *conn) handedOver() { c.closeCode = closeHandedOver }

// closeHandedOver is never sent: it marks a connection that left with a
// handoff (closeCode is otherwise only set when a close frame moves).
const closeHandedOver = 1

// closeFrozen is OnClose for a frozen connection: it releases what this
// process held for it without a leave push or a presence removal (the
// client is still there, served by the other process).
func (l *loop) closeFrozen(c *conn) {
	s := l.srv
	if c.closeCode == closeHandedOver {
		s.ho.sent.Inc()
	}
	c.state = stateClosed
	l.wheel.remove(c)
	if sess := c.sess; sess != nil {
		for i, sb := range sess.subs {
			l.leaveQuiet(sb)
			sess.subs[i] = nil
		}
		sess.subs = nil
		sess.q.Reset()
	}
	if c.ipCounted {
		s.ipl.release(remoteIP(c.gc))
	}
	if c.userCounted {
		s.auth.users.release(c.sess.user)
	}
	c.parser.Reset()
	l.conns--
	s.m.AddOpen(-1)
	c.gc.SetContext(nil)
}

// thaw resumes a frozen connection here (the new process refused it or
// failed): the wheel and reading again, and its subscriptions recovered
// from their last delivered offsets.
func (l *loop) thaw(c *conn) {
	if c.state != stateFrozen {
		return
	}
	c.state = stateOpen
	l.schedule(c)
	l.batch = c
	if sess := c.sess; sess != nil {
		for _, s := range sess.subs {
			sub := s.Conn
			op := &brokerOp{kind: opResume, l: l, c: c, ch: s.Channel(), ns: sub.ns, sub: sub, hist: sub.ns.HistorySize > 0}
			op.info = broker.ClientInfo{ClientID: sess.clientID(), UserID: sess.user}
			if in := sess.id.Info(); in != "" {
				op.info.Info = []byte(in)
			}
			l.resumeSub(op)
			if c.state != stateOpen {
				break
			}
		}
	}
	l.endBatch()
	if c.sess != nil && c.state == stateOpen {
		l.flush(c)
	}
	l.readAgain(c)
	l.srv.ho.resumed.Inc()
}

// schedule files c in the wheel at its next heartbeat deadline.
func (l *loop) schedule(c *conn) {
	if c.pinged {
		l.wheel.add(c, c.lastSeen+l.idleTicks)
	} else {
		l.wheel.add(c, c.lastSeen+l.pingTicks)
	}
	l.scheduleExpiry(c)
}

// resumeSub starts the op that recovers one subscription from sub.last.
func (l *loop) resumeSub(op *brokerOp) {
	sub := op.sub
	if op.hist {
		op.req = broker.HistoryRequest{Since: &broker.StreamPosition{Offset: sub.last, Epoch: sub.epoch}, Limit: l.srv.cfg.RecoveryMax}
	}
	_ = l.do(op) // errBusy: handleOp completes it
}

// readAgain reads c again once no resume op is in flight, parsing what
// gnet holds for it (input carried over from the other process included).
func (l *loop) readAgain(c *conn) {
	if c.state != stateOpen || (c.sess != nil && c.sess.inflight > 0) {
		return
	}
	l.setReading(c, true)
	if c.gc.InboundBuffered() > 0 {
		_ = c.gc.Wake(nil)
	}
}

// completeResume delivers what a resumed subscription missed: the
// publications after its last delivered offset, as pushes, then those held
// while the op was in flight. If the history cannot give them all (trimmed,
// another epoch, broker down) the client gets a lagged push and recovers
// itself, as after a slow-consumer drop.
func (l *loop) completeResume(op *brokerOp) error {
	c, sub := op.c, op.sub
	hold := sub.hold
	sub.hold = nil
	defer hold.release()
	if c.state != stateOpen {
		return nil
	}
	lost := sub.lagging
	if sub.lagging {
		sub.lagging = false
		c.sess.lagging--
	}
	switch {
	case op.err != nil:
		l.srv.log.Warn("handoff: resuming a subscription", "channel", op.ch, "err", op.err)
		lost = true
	case op.hist:
		res := &op.res
		if !res.Recovered {
			lost = true
			break
		}
		for _, p := range res.Publications {
			f := encodePush(op.ch, p.Offset, p.Data)
			l.enqueue(sub, op.ch, l.frameFor(c, f), p.Offset, p.Epoch)
			f.Release()
		}
	}
	if hold != nil {
		if hold.lost {
			lost = true
		} else {
			for _, h := range hold.pushes {
				l.enqueue(sub, op.ch, l.frameFor(c, h.f), h.offset, h.epoch)
			}
		}
	}
	if lost {
		at := sub.last
		l.flush(c)
		if op.err == nil && op.hist && op.res.Position.Epoch != sub.epoch {
			// Another stream: what comes next is numbered from its
			// position, and the client is told so (a reset push, as on a
			// live subscription whose stream restarted).
			sub.last, sub.epoch = op.res.Position.Offset, op.res.Position.Epoch
			l.srv.m.StreamResets.Inc()
			if !c.writeFrame(frame.OpText, protocol.AppendReset(l.out[:0], op.ch, sub.last, sub.epoch)) {
				return errStop
			}
			return nil
		}
		if !c.writeFrame(frame.OpText, protocol.AppendLagged(l.out[:0], op.ch, at)) {
			return errStop
		}
	}
	return nil
}

// stopListening takes this loop's listeners out of its epoll instance and
// stops them listening, so that the kernel sends every new connection to
// the other process's listeners on the same port (SO_REUSEPORT). On the
// loop goroutine, so that no accept of gnet's runs meanwhile. It returns
// the listeners it stopped.
func (l *loop) stopListening() []int {
	var fds []int
	for _, fd := range listenerFDs(l.el) {
		if l.epfd >= 0 {
			_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
		}
		if err := unix.Shutdown(fd, unix.SHUT_RD); err == nil {
			fds = append(fds, fd)
		}
	}
	return fds
}

// listenAgain undoes stopListening (a failed handoff): the socket still
// holds its port, so listen(2) takes it up again.
func (l *loop) listenAgain(fds []int) error {
	var first error
	for _, fd := range fds {
		if err := unix.Listen(fd, 4096); err != nil && first == nil {
			first = err
			continue
		}
		if l.epfd >= 0 {
			if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Fd: int32(fd), Events: unix.EPOLLIN | unix.EPOLLPRI}); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

// listenerFDs returns the listening sockets gnet polls on el, found by
// reflection on gnet v2's eventloop.listeners (keyed by fd) and checked
// to be listening sockets; nil if gnet's layout differs.
func listenerFDs(el gnet.EventLoop) []int {
	v := reflect.ValueOf(el)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return nil
	}
	m := v.Elem().FieldByName("listeners")
	if m.Kind() != reflect.Map || m.Type().Key().Kind() != reflect.Int {
		return nil
	}
	var fds []int
	for _, k := range m.MapKeys() {
		fd := int(k.Int())
		if on, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err == nil && on == 1 {
			fds = append(fds, fd)
		}
	}
	return fds
}

// eventLoops returns every event loop of a running gnet engine (by
// reflection on gnet v2's engine.eventLoops), or nil if its layout differs.
func eventLoops(eng gnet.Engine) []gnet.EventLoop {
	v := reflect.ValueOf(&eng).Elem().FieldByName("eng")
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return nil
	}
	lb := v.Elem().FieldByName("eventLoops")
	if lb.Kind() != reflect.Interface || lb.IsNil() {
		return nil
	}
	lbv := lb.Elem()
	if lbv.Kind() != reflect.Pointer || lbv.IsNil() {
		return nil
	}
	list := lbv.Elem().FieldByName("eventLoops")
	if !list.IsValid() {
		// gnet embeds baseLoadBalancer in each balancer.
		if base := lbv.Elem().FieldByName("baseLoadBalancer"); base.IsValid() {
			list = base.FieldByName("eventLoops")
		}
	}
	if list.Kind() != reflect.Slice || !list.CanAddr() {
		return nil
	}
	list = reflect.NewAt(list.Type(), unsafe.Pointer(list.UnsafeAddr())).Elem()
	var out []gnet.EventLoop
	for i := range list.Len() {
		if el, ok := list.Index(i).Interface().(gnet.EventLoop); ok {
			out = append(out, el)
		}
	}
	return out
}

// injectInbound puts bytes read by the other process in front of gc's
// input, as if gnet had read them: gnet has no call for it, so they go
// into its inbound buffer (gnet v2's conn.inboundBuffer, found by
// reflection and checked for its type). It reports false if that fails.
func injectInbound(gc gnet.Conn, b []byte) bool {
	if len(b) == 0 {
		return true
	}
	v := reflect.ValueOf(gc)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return false
	}
	f := v.Elem().FieldByName("inboundBuffer")
	if !f.IsValid() || f.Type() != reflect.TypeOf(elastic.RingBuffer{}) || !f.CanAddr() {
		return false
	}
	rb := (*elastic.RingBuffer)(unsafe.Pointer(f.UnsafeAddr()))
	n, err := rb.Write(b)
	return err == nil && n == len(b) && gc.InboundBuffered() >= len(b)
}

// fdIsSocket says whether fd is a stream socket (checked on received
// descriptors).
func fdIsSocket(fd int) bool {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	return err == nil && typ == unix.SOCK_STREAM
}
