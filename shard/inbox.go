package shard

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// cacheLine separates fields written by different goroutines.
const cacheLine = 64

type inboxCell[T any] struct {
	// seq is the cell's turn (Vyukov's bounded queue): pos when free for
	// the producer that claimed position pos, pos+1 once that producer has
	// stored v, pos+len(cells) once the consumer has taken v.
	seq atomic.Uint64
	v   T
}

// Inbox is a bounded lock-free multi-producer single-consumer queue of
// messages for one event loop, with an unbounded, mutex-protected overflow
// list behind it so that nothing is ever dropped.
//
// Ownership: any goroutine may call Push, Len and Overflowed; Drain belongs
// to the one consumer goroutine (the loop) and must never run concurrently
// with itself.
//
// Order: messages of one producer are drained in the order it pushed them.
// When the ring is full, a Push goes to the overflow list, and from then on
// every Push does, until the consumer has taken the whole list; the consumer
// empties the ring before it takes the list. Messages of different
// producers have no order relative to each other.
//
// Wake-ups: Push returns true exactly once per idle period, when the inbox
// goes from idle (the last Drain found it empty) to non-empty; the caller
// then wakes the loop (gnet EventLoop.Execute) so that it calls Drain.
type Inbox[T any] struct {
	cells []inboxCell[T]
	mask  uint64
	_     [cacheLine - 32]byte

	tail atomic.Uint64 // next position a producer claims
	_    [cacheLine - 8]byte

	// idle is true while nobody is draining and no wake-up is pending.
	idle atomic.Bool
	// ovLen is the length of ov; non-zero diverts every Push to ov.
	ovLen atomic.Int64
	// overflowed counts Pushes that went to ov, for metrics.
	overflowed atomic.Uint64
	mu         sync.Mutex
	ov         []T // guarded by mu
	_          [cacheLine - 8]byte

	// Written by the consumer only; atomic so that Len may read it.
	head atomic.Uint64 // next position to take
	// Consumer-only fields.
	cur  []T // overflow batch being drained
	next int // index of the next message in cur
}

// NewInbox returns an inbox whose ring holds size messages, rounded up to a
// power of two (at least 2). It allocates the ring once.
func NewInbox[T any](size int) *Inbox[T] {
	n := 2
	for n < size {
		n <<= 1
	}
	q := &Inbox[T]{cells: make([]inboxCell[T], n), mask: uint64(n - 1)}
	for i := range q.cells {
		q.cells[i].seq.Store(uint64(i))
	}
	q.idle.Store(true)
	return q
}

// Push enqueues v and reports whether the caller must wake the consumer.
// It is safe for concurrent use, lock-free while the ring has room, and
// does not allocate then; when the ring is full it takes a mutex and
// appends to the overflow list, which allocates only to grow that list.
func (q *Inbox[T]) Push(v T) (wake bool) {
	if q.ovLen.Load() != 0 || !q.tryPush(v) {
		q.mu.Lock()
		q.ov = append(q.ov, v)
		q.ovLen.Store(int64(len(q.ov)))
		q.mu.Unlock()
		q.overflowed.Add(1)
	}
	// Dekker with Drain: we published v, then read idle; the consumer sets
	// idle, then looks for messages. Go's atomics are sequentially
	// consistent, so at least one of us sees the other.
	return q.idle.Load() && q.idle.CompareAndSwap(true, false)
}

func (q *Inbox[T]) tryPush(v T) bool {
	pos := q.tail.Load()
	for {
		c := &q.cells[pos&q.mask]
		seq := c.seq.Load()
		switch {
		case seq == pos:
			if q.tail.CompareAndSwap(pos, pos+1) {
				c.v = v
				c.seq.Store(pos + 1)
				return true
			}
			pos = q.tail.Load()
		case seq < pos:
			// The cell still holds the message from one lap ago.
			return false
		default:
			// Another producer claimed pos first.
			pos = q.tail.Load()
		}
	}
}

// pop takes the message at head, waiting for a producer that has claimed
// the position but not yet stored its message (a window of a few
// instructions, unless that producer is preempted).
func (q *Inbox[T]) pop() (v T, ok bool) {
	pos := q.head.Load()
	c := &q.cells[pos&q.mask]
	for spins := 0; c.seq.Load() != pos+1; spins++ {
		if q.tail.Load() == pos {
			return v, false
		}
		if spins > 64 {
			runtime.Gosched()
		}
	}
	v = c.v
	var zero T
	c.v = zero
	c.seq.Store(pos + q.mask + 1)
	q.head.Store(pos + 1)
	return v, true
}

// Drain calls fn for up to max (> 0) messages, in order, on the consumer
// goroutine, and returns how many it handled. fn may Push to this inbox but
// must not call Drain. The engine may also call Drain when it was not woken
// (e.g. on each loop turn); that is harmless.
//
// If more is false, Drain found the inbox empty and re-armed the wake-up:
// the next Push returns wake=true (or already has, racing with the end of
// Drain), so no message is left without a wake-up. If more is true, Drain
// stopped at max with messages left and nobody else will wake the loop:
// the caller must schedule another Drain itself (e.g. Execute again, to let
// socket events in between batches).
//
// Drain does not allocate. Messages are zeroed in the ring once taken, so
// the inbox does not keep what they point to alive.
func (q *Inbox[T]) Drain(max int, fn func(T)) (n int, more bool) {
	var zero T
	for {
		// 1. The rest of the overflow batch: older than anything in
		// the ring from producers that also have messages in it.
		for q.next < len(q.cur) {
			if n >= max {
				return n, true
			}
			v := q.cur[q.next]
			q.cur[q.next] = zero
			q.next++
			fn(v)
			n++
		}
		q.cur, q.next = q.cur[:0], 0

		// 2. The ring.
		for {
			if n >= max {
				return n, true
			}
			v, ok := q.pop()
			if !ok {
				break
			}
			fn(v)
			n++
		}

		// 3. The overflow list, once the ring is empty: a producer's
		// messages in the ring were claimed before any of its own in the
		// list (its ring claim happened before its list append, which
		// happened before our lock), so they are all taken by now.
		if q.ovLen.Load() != 0 {
			q.mu.Lock()
			if q.tail.Load() != q.head.Load() {
				q.mu.Unlock()
				continue
			}
			q.cur, q.ov = q.ov, q.cur
			q.ovLen.Store(0)
			q.mu.Unlock()
			continue
		}

		// 4. Empty: re-arm, then look again (see Push).
		q.idle.Store(true)
		if q.tail.Load() == q.head.Load() && q.ovLen.Load() == 0 {
			return n, false
		}
		if !q.idle.CompareAndSwap(true, false) {
			// A producer has claimed the wake-up: the loop is called
			// again.
			return n, false
		}
	}
}

// Len returns the number of messages waiting, for metrics. It is exact only
// when producers and the consumer are quiet.
func (q *Inbox[T]) Len() int {
	head := q.head.Load() // before tail: tail never falls behind it
	return int(q.tail.Load()-head) + int(q.ovLen.Load())
}

// Overflowed returns how many Pushes found the ring full (or the overflow
// list in use) and went to the overflow list, since NewInbox.
func (q *Inbox[T]) Overflowed() uint64 { return q.overflowed.Load() }
