package engine

import (
	"sync"
	"sync/atomic"

	"github.com/wsedge/wsedge/ingest"
)

// The connection event stream (docs/INGEST.md, "Events"): connect,
// disconnect (with close code and who closed), subscribe and unsubscribe
// of WebSocket connections, for backends that ask with OpEvents. The node
// keeps the last IngestConfig.EventBuffer events in one ring, numbered
// from 1; each reading connection has a cursor into it and gets batches on
// the ingest loop's tick. A backend that does not read falls behind the
// ring, and its next batch says how many events it lost: the server holds
// the ring, and at most MaxOutbound of unread batches per connection,
// never more.

// eventLog is the ring. WebSocket loops append (under mu, only while some
// backend reads the stream); ingest loops read.
type eventLog struct {
	on   atomic.Bool
	mu   sync.Mutex
	ring []connEvent
	next uint64 // number of the next event; the first is 1
}

type connEvent struct {
	kind                          ingest.EventKind
	code                          uint16
	client, user, channel, reason string
}

func newEventLog(size int) *eventLog {
	return &eventLog{ring: make([]connEvent, size), next: 1}
}

func (e *eventLog) add(ev connEvent) {
	e.mu.Lock()
	e.ring[e.next%uint64(len(e.ring))] = ev
	e.next++
	e.mu.Unlock()
}

// read appends the events from number from on (at most max) to dst. It
// returns the number of the first one it appended, how many before it
// were lost (overwritten), and the number to read next.
func (e *eventLog) read(from uint64, max int, dst []connEvent) (out []connEvent, first, lost, next uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	oldest := uint64(1)
	if n := uint64(len(e.ring)); e.next > n {
		oldest = e.next - n
	}
	if from < oldest {
		lost = oldest - from
		from = oldest
	}
	first = from
	for ; from < e.next && len(dst) < max; from++ {
		dst = append(dst, e.ring[from%uint64(len(e.ring))])
	}
	return dst, first, lost, from
}

func (e *eventLog) position() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.next
}

// connEvent records an event of c if a backend reads the stream; it costs
// a nil check and an atomic load otherwise. Called on c's loop.
func (s *Server) connEvent(kind ingest.EventKind, c *conn, channel string, code uint16, reason string) {
	e := s.events
	if e == nil || !e.on.Load() || c.sess == nil {
		return
	}
	e.add(connEvent{kind: kind, code: code, client: c.sess.clientID(), user: c.sess.user, channel: channel, reason: reason})
}

// closedBy names who ended a connection, as the connection log does.
func closedBy(c *conn) string {
	switch {
	case c.serverClose:
		return "server"
	case c.closeCode == 0:
		return "transport"
	}
	return "client"
}

// startEvents makes c a reader of the event stream from now on; the ack's
// offset is the number of the first event it will get.
func (il *ingestLoop) startEvents(c *ingestConn, seq uint64) {
	e := il.srv.s.events
	if !c.events {
		c.events = true
		c.evNext = e.position()
		il.evConns = append(il.evConns, c)
		e.on.Store(true)
	}
	il.ack(seq, c.evNext, "", 0)
}

const eventBatch = 256

// feedEvents sends each reading connection the events it has not had, in
// batches, while its unread responses stay under MaxOutbound. Runs on the
// ingest loop's tick.
func (il *ingestLoop) feedEvents() {
	e := il.srv.s.events
	keep := il.evConns[:0]
	var evs []connEvent
	for _, c := range il.evConns {
		if c.closed {
			continue
		}
		keep = append(keep, c)
		for range 16 {
			if c.overOut() || c.evNext >= e.position() {
				break
			}
			var first, lost uint64
			evs, first, lost, c.evNext = e.read(c.evNext, eventBatch, evs[:0])
			out, start := ingest.AppendEventsOpen(il.out[:0], first, uint32(min(lost, 1<<32-1)))
			for _, ev := range evs {
				out = ingest.AppendEvent(out, ev.kind, ev.client, ev.user, ev.channel, ev.code, ev.reason)
			}
			il.out = ingest.FinishEvents(out, start, len(evs))
			_, _ = c.gc.Write(il.out)
		}
	}
	clear(il.evConns[len(keep):])
	il.evConns = keep
	clear(evs)
}
