package engine

import (
	"time"

	"github.com/wsedge/wsedge/broker"
	"github.com/wsedge/wsedge/frame"
	"github.com/wsedge/wsedge/protocol"
	"github.com/wsedge/wsedge/shard"
)

// onPublication is the broker's handler: it runs on the publishing
// goroutine, under the broker's channel lock, once per publication in offset
// order. It encodes the push once and hands a reference to each loop that
// has subscribers; it never blocks.
func (s *Server) onPublication(channel string, pub broker.Publication) {
	s.m.Publications.Inc()
	f := encodePush(channel, pub.Offset, pub.Data)
	s.postAt(channel, pub.Offset, pub.Epoch, f, s.samplePublish())
}

// pushToChannel sends a push that is not a publication (join, leave) to
// the channel's subscribers.
func (s *Server) pushToChannel(channel string, offset uint64, msg []byte) {
	f := shard.NewFrame(len(msg) + frame.MaxHeaderSize)
	f.Buf = frame.AppendFrame(f.Buf[:0], frame.OpText, msg)
	s.post(channel, offset, "", f)
}

// post gives one reference of f to every loop with local subscribers and
// drops the caller's.
func (s *Server) post(channel string, offset uint64, epoch string, f *shard.Frame) {
	s.postAt(channel, offset, epoch, f, 0)
}

// postAt is post; a non-zero t0 makes f the latency sample (opsmetrics.go).
func (s *Server) postAt(channel string, offset uint64, epoch string, f *shard.Frame, t0 int64) {
	set, ch := s.hub.Lookup(channel) // ch: the name boxed once per channel
	loops := *s.byIdx.Load()
	for i := set.Next(0); i >= 0; i = set.Next(i + 1) {
		if i >= len(loops) {
			break
		}
		l := loops[i]
		if t0 != 0 {
			l.armSample(f, t0)
		}
		f.Retain()
		l.inboxBytes.Add(int64(f.Cost()))
		if l.inbox.Push(shard.Msg{Kind: msgPush, Conn: offset, Frame: f, Ptr: ch, Epoch: epoch}) {
			l.wake()
		}
	}
	f.Release()
}

// encodePush builds the publication push with its WebSocket header in one
// pooled frame: the JSON is appended behind room for the longest header,
// then moved down behind the real one.
func encodePush(channel string, offset uint64, data []byte) *shard.Frame {
	f := shard.NewFrame(len(channel) + len(data) + 64)
	const room = 10
	b := append(f.Buf[:0], make([]byte, room)...)
	b = protocol.AppendPublication(b, channel, offset, data)
	n := len(b) - room
	h := frame.HeaderLen(n)
	copy(b[h:], b[room:])
	frame.AppendHeader(b[:0], true, frame.OpText, n)
	f.Buf = b[:h+n]
	return f
}

// drainInbox runs on the loop: it hands queued pushes to subscribers, then
// flushes every connection it touched once, with one writev each.
func (l *loop) drainInbox() {
	_, more := l.inbox.Drain(512, l.handleMsg)
	if l.flushDue() {
		l.flushAll()
	}
	if more {
		l.wake()
	}
}

// flushDue reports whether the loop may write its subscribers now: always,
// unless a flush interval is set and has not passed since the last round.
func (l *loop) flushDue() bool {
	every := l.srv.cfg.FlushInterval
	return every == 0 || time.Since(l.lastFlush) >= every
}

// flushAll writes every touched connection and retries the waiting ones.
func (l *loop) flushAll() {
	l.flushTouched()
	if len(l.pending) > 0 {
		l.flushPending()
	}
	if l.srv.cfg.FlushInterval > 0 {
		l.lastFlush = time.Now()
	}
	l.observeSample()
}

// inboxHighWater and inboxMaxBytes bound a loop's inbox: publishes (and
// subscribes that push a join) to a channel with a subscriber on a loop
// whose inbox is over either are refused with "overloaded", so producers
// feel the back-pressure and the inbox cannot grow without limit. Pushes
// already admitted (at most one per concurrent publisher) and leave pushes
// (at most one per subscription) still go in. Bytes count each frame once
// per loop it is posted to, though loops share it: an upper bound.
const (
	inboxHighWater = 4 * inboxSize
	inboxMaxBytes  = 64 << 20
)

// inboxFull reports whether the loop's inbox is over its bounds. Any
// goroutine may call it.
func (l *loop) inboxFull() bool {
	return l.inbox.Len() >= inboxHighWater || l.inboxBytes.Load() >= inboxMaxBytes
}

func (l *loop) handleMsg(m shard.Msg) {
	if m.Kind == msgOp {
		l.handleOp(m.Ptr.(*brokerOp))
		return
	}
	l.inboxBytes.Add(-int64(m.Frame.Cost()))
	if m.Kind == msgPush {
		// Backwards: a slow-consumer close may remove the current
		// subscriber from the list (swap-remove from the end).
		l.sawPush(m.Frame)
		ch := m.Ptr.(string)
		subs := l.index.Subs(ch)
		for i := len(subs) - 1; i >= 0; i-- {
			sub := subs[i].Conn
			l.enqueue(sub, ch, l.frameFor(sub.c, m.Frame), m.Conn, m.Epoch)
		}
	}
	m.Frame.Release()
}

// enqueue queues f for one subscriber, applying the slow-consumer policy
// when the connection's queue is full. A publication (offset > 0) is
// checked against the subscription's position first: at or below it, it
// was in the subscribe reply; in another epoch, the channel's stream was
// lost and restarted, and the client is told (reset push) before it gets
// the new stream's publications; past a gap, the client is told what it
// missed (lagged push). It does not allocate on the common path.
func (l *loop) enqueue(sub *subscription, ch string, f *shard.Frame, offset uint64, epoch string) {
	c := sub.c
	if sub.hold != nil {
		sub.hold.add(f, offset, epoch, l.srv.cfg.MaxOutboundBytes)
		return
	}
	if c.state != stateOpen || sub.lagging {
		if sub.lagging {
			l.tally.lagDropped++
		}
		return
	}
	if offset != 0 {
		switch {
		case epoch != sub.epoch && epoch != "":
			// A new stream: its offsets start again at 1 and say
			// nothing about the old one's.
			l.srv.m.StreamResets.Inc()
			if !l.notice(c, sub, protocol.AppendReset(l.out[:0], ch, offset-1, epoch)) {
				return
			}
			sub.epoch, sub.told = epoch, false
		case offset <= sub.last:
			return // already in the subscribe reply
		case offset > sub.last+1 && !sub.told:
			// Publications in between never reached this node (a
			// broker connection lost and resubscribed): the client
			// recovers them from history.
			l.srv.m.DeliveryGaps.Inc()
			if !l.notice(c, sub, protocol.AppendLagged(l.out[:0], ch, sub.last)) {
				return
			}
		}
	}
	if !l.queue(c, sub, f) {
		return
	}
	if offset != 0 {
		sub.last, sub.told = offset, false
	}
	l.tally.deliveries++
}

// queue puts f on c's outbound queue behind what is there, applying the
// slow-consumer policy when it is full; false when f was not queued.
func (l *loop) queue(c *conn, sub *subscription, f *shard.Frame) bool {
	sess := c.sess
	maxB, maxM := l.srv.cfg.MaxOutboundBytes, l.srv.cfg.MaxOutboundMessages
	if !sess.q.Push(f, maxB, maxM) {
		// A batch may hold more than the bound: the policy is for
		// connections whose socket does not take what is queued, so
		// write what waits first and look again.
		l.flush(c)
		if c.state != stateOpen {
			return false
		}
		if !sess.q.Push(f, maxB, maxM) {
			l.slowConsumer(c, sub)
			return false
		}
	}
	if !sess.touched {
		sess.touched = true
		l.touched = append(l.touched, c)
	}
	return true
}

// notice queues a push of the loop's own (msg) on c's outbound queue, in
// order with the publications around it. Rare: it takes a pooled frame.
func (l *loop) notice(c *conn, sub *subscription, msg []byte) bool {
	f := shard.NewFrame(len(msg) + frame.MaxHeaderSize)
	f.Buf = frame.AppendFrame(f.Buf[:0], frame.OpText, msg)
	ok := l.queue(c, sub, f)
	f.Release()
	return ok && c.state == stateOpen
}

func (l *loop) slowConsumer(c *conn, sub *subscription) {
	if l.srv.cfg.SlowConsumer == "lag" {
		sub.lagging = true
		c.sess.lagging++
		l.tally.lagDropped++
		return
	}
	l.tally.slowClosed++
	c.sess.q.Reset()
	c.disconnect(protocol.DisconnectSlow, "slow consumer", frame.CloseTryAgainLater)
}

func (l *loop) flushTouched() {
	for i, c := range l.touched {
		l.touched[i] = nil
		c.sess.touched = false
		l.flush(c)
	}
	l.touched = l.touched[:0]
}

// flush writes a connection's queue in one writev when gnet holds nothing
// unsent for it; otherwise the connection waits in loop.pending for a later
// turn (gnet has no writable callback).
func (l *loop) flush(c *conn) {
	sess := c.sess
	if c.state == stateClosed || sess.q.Len() == 0 {
		return
	}
	if c.gc.OutboundBuffered() > 0 {
		if !sess.pending {
			sess.pending = true
			l.pending = append(l.pending, c)
		}
		return
	}
	msgs := sess.q.Len()
	n, err := sess.q.Flush(c.gc, l.iovs[:0])
	if err != nil || c.state == stateClosed {
		return
	}
	l.tally.msgsOut += uint64(msgs)
	l.tally.bytesOut += uint64(n)
	c.stats.msgsOut += uint32(msgs)
	c.stats.bytesOut += uint64(n)
	if sess.lagging > 0 {
		l.endLag(c)
	}
}

// endLag tells a connection which channels lost publications while its
// queue was full; it recovers them from history.
func (l *loop) endLag(c *conn) {
	for _, s := range c.sess.subs {
		sub := s.Conn
		if !sub.lagging {
			continue
		}
		sub.lagging = false
		sub.told = true
		c.sess.lagging--
		if !c.writeFrame(frame.OpText, protocol.AppendLagged(l.out[:0], s.Channel(), sub.last)) {
			return
		}
	}
}

// flushPending retries connections whose queue waited for gnet to drain.
func (l *loop) flushPending() {
	keep := l.pending[:0]
	for _, c := range l.pending {
		if c.state == stateClosed || c.sess.q.Len() == 0 {
			c.sess.pending = false
			continue
		}
		if c.gc.OutboundBuffered() > 0 {
			keep = append(keep, c)
			continue
		}
		c.sess.pending = false
		l.flush(c)
	}
	clear(l.pending[len(keep):])
	l.pending = keep
}
