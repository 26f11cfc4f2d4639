package shard

import (
	"math/bits"
	"sync"
)

// Writer is the part of a gnet.Conn that a Queue writes to. gnet's Writev,
// called on the loop goroutine, writes what the socket takes and copies the
// rest into gnet's outbound buffer, so the slices passed to it may be reused
// as soon as it returns. OutboundBuffered reports the bytes gnet still holds.
// gnet.Conn satisfies Writer; a Queue calls it on the connection's loop
// goroutine only.
type Writer interface {
	Writev(bs [][]byte) (int, error)
	OutboundBuffered() int
}

// MaxIOV is the most slices a Queue passes to one Writev call: Linux refuses
// a writev(2) with more than IOV_MAX (1024) iovecs, and gnet does not split.
const MaxIOV = 1024

// Ring storage classes: powers of two from 1<<minRingShift to
// 1<<maxRingShift slots. A larger ring is allocated and dropped.
const (
	minRingShift = 3  // 8 slots
	maxRingShift = 12 // 4096 slots
)

var ringPools [maxRingShift - minRingShift + 1]sync.Pool

// ring is the storage of a non-empty Queue. Frames leave only all at once
// (Flush, Reset), so it is a plain slice, never wrapped.
type ring struct {
	slots []*Frame // len is a power of two
	n     int
	bytes int
}

func getRing(class int) *ring {
	if class >= len(ringPools) {
		return &ring{slots: make([]*Frame, 1<<(class+minRingShift))}
	}
	r, _ := ringPools[class].Get().(*ring)
	if r == nil {
		r = &ring{slots: make([]*Frame, 1<<(class+minRingShift))}
	}
	return r
}

func putRing(r *ring) {
	c := bits.Len(uint(len(r.slots))) - 1 - minRingShift
	r.n, r.bytes = 0, 0
	if c < len(ringPools) {
		ringPools[c].Put(r)
	}
}

// Queue is a connection's bounded outbound queue of shared frames. The zero
// value is an empty queue; it holds no storage while empty, so an idle
// connection pays only unsafe.Sizeof(Queue{}) (two pointers). One waiting
// frame, the usual case at low rates, sits in the Queue itself; storage for
// more comes from a pool and goes back when the queue drains.
//
// Ownership: a Queue belongs to its connection's event loop goroutine; no
// method may be called from any other goroutine.
type Queue struct {
	one *Frame // the only waiting frame, when r is nil
	r   *ring  // the waiting frames, when there are two or more
}

// Len returns the number of frames waiting.
func (q *Queue) Len() int {
	switch {
	case q.r != nil:
		return q.r.n
	case q.one != nil:
		return 1
	}
	return 0
}

// Bytes returns the memory the waiting frames stand for (see Frame.Cost).
func (q *Queue) Bytes() int {
	switch {
	case q.r != nil:
		return q.r.bytes
	case q.one != nil:
		return q.one.Cost()
	}
	return 0
}

// Push appends a reference to f (retaining it) unless that would put more
// than maxMsgs frames or maxBytes of Frame.Cost in the queue; then it returns false,
// leaves the queue and f untouched, and the caller applies its slow-consumer
// policy. It does not allocate in steady state: storage comes from a pool,
// and grows (from the pool of the next size) only up to maxMsgs slots.
func (q *Queue) Push(f *Frame, maxBytes, maxMsgs int) bool {
	r := q.r
	if r == nil {
		if q.one == nil {
			if maxMsgs < 1 || f.Cost() > maxBytes {
				return false
			}
			f.Retain()
			q.one = f
			return true
		}
		if maxMsgs < 2 || q.one.Cost()+f.Cost() > maxBytes {
			return false
		}
		r = getRing(0)
		r.slots[0], r.n, r.bytes = q.one, 1, q.one.Cost()
		q.one, q.r = nil, r
	} else if r.n >= maxMsgs || r.bytes+f.Cost() > maxBytes {
		return false
	}
	if r.n == len(r.slots) {
		r = q.grow()
	}
	f.Retain()
	r.slots[r.n] = f
	r.n++
	r.bytes += f.Cost()
	return true
}

// grow moves the frames to storage twice the size and returns it.
func (q *Queue) grow() *ring {
	old := q.r
	c := bits.Len(uint(len(old.slots))) - minRingShift
	r := getRing(c)
	copy(r.slots, old.slots[:old.n])
	clear(old.slots[:old.n])
	r.n, r.bytes = old.n, old.bytes
	putRing(old)
	q.r = r
	return r
}

// Flush writes every waiting frame, in order, with one w.Writev call per
// MaxIOV frames (normally exactly one), releases them and returns the queue's
// storage to its pool. gnet copies whatever the socket did not take, so the
// frames are released as soon as Writev returns.
//
// When w.OutboundBuffered() > 0 (gnet still holds unsent bytes), Flush writes
// nothing and keeps the frames waiting: they count against the Push bounds,
// which is how a slow reader is detected. gnet has no writable notification,
// so the loop calls Flush again when it has spare turns (after traffic, on
// tick).
//
// iov is scratch space owned by the loop; its capacity should be at least
// min(max messages, MaxIOV), or Flush allocates to extend it. Flush leaves
// its elements nil. It returns the bytes handed to Writev and Writev's error;
// on error the frames are still released (gnet closes the connection). The
// frames leave the queue before Writev is called, so the engine may Reset
// or Push to the queue from a callback gnet runs inside Writev (OnClose).
// It does not allocate when cap(iov) suffices.
func (q *Queue) Flush(w Writer, iov [][]byte) (written int, err error) {
	if (q.r == nil && q.one == nil) || w.OutboundBuffered() > 0 {
		return 0, nil
	}
	// Detach the frames first: on a write error gnet closes the connection
	// inside Writev, and the engine's OnClose then resets this queue.
	one, r := q.one, q.r
	q.one, q.r = nil, nil
	if r == nil {
		iov = append(iov[:0], one.Bytes())
		written, err = w.Writev(iov)
		clear(iov)
		one.Release()
		return written, err
	}
	for i := 0; i < r.n && err == nil; {
		iov = iov[:0]
		for ; i < r.n && len(iov) < MaxIOV; i++ {
			iov = append(iov, r.slots[i].Bytes())
		}
		var n int
		n, err = w.Writev(iov)
		written += n
		clear(iov)
	}
	releaseRing(r)
	return written, err
}

// Reset releases every waiting frame and returns the storage to its pool,
// e.g. when the connection closes. It does not allocate.
func (q *Queue) Reset() {
	if q.one != nil {
		q.one.Release()
		q.one = nil
	}
	if q.r != nil {
		releaseRing(q.r)
		q.r = nil
	}
}

// releaseRing releases r's frames and returns it to its pool.
func releaseRing(r *ring) {
	for i, f := range r.slots[:r.n] {
		f.Release()
		r.slots[i] = nil
	}
	putRing(r)
}
