package engine

import "time"

// wheelTick is the heartbeat wheel's resolution.
const wheelTick = 100 * time.Millisecond

// wheel is a hashed timing wheel of connections, one per loop, owned by the
// loop goroutine. Every connection sits in exactly one slot, at the tick its
// next deadline falls due. Activity does not move a connection: it only
// updates conn.lastSeen, and the connection is re-examined when its slot
// comes round, so a tick costs O(connections in that slot), not O(all).
type wheel struct {
	slots []*conn
	mask  int64
	now   int64 // last tick processed
}

func newWheel(span time.Duration) wheel {
	n := int64(1)
	for n < int64(span/wheelTick)+2 {
		n <<= 1
	}
	return wheel{slots: make([]*conn, n), mask: n - 1}
}

// add schedules c at tick due (at least the next tick).
func (w *wheel) add(c *conn, due int64) {
	if due <= w.now {
		due = w.now + 1
	}
	c.due = due
	s := due & w.mask
	c.wprev = nil
	c.wnext = w.slots[s]
	if c.wnext != nil {
		c.wnext.wprev = c
	}
	w.slots[s] = c
	c.inWheel = true
}

func (w *wheel) remove(c *conn) {
	if !c.inWheel {
		return
	}
	if c.wprev != nil {
		c.wprev.wnext = c.wnext
	} else {
		w.slots[c.due&w.mask] = c.wnext
	}
	if c.wnext != nil {
		c.wnext.wprev = c.wprev
	}
	c.wnext, c.wprev, c.inWheel = nil, nil, false
}

// reschedule moves c to tick due.
func (w *wheel) reschedule(c *conn, due int64) {
	w.remove(c)
	w.add(c, due)
}

// advance processes every tick up to and including to, calling fire for
// each connection that falls due, after removing it from the wheel. fire
// may add it back or close it.
func (w *wheel) advance(to int64, fire func(*conn)) {
	for w.now < to {
		w.now++
		s := w.now & w.mask
		for c := w.slots[s]; c != nil; {
			next := c.wnext
			if c.due <= w.now {
				w.remove(c)
				fire(c)
			}
			c = next
		}
	}
}

// each calls fn for every connection in the wheel. fn must not add or remove.
func (w *wheel) each(fn func(*conn)) {
	for _, head := range w.slots {
		for c := head; c != nil; c = c.wnext {
			fn(c)
		}
	}
}
