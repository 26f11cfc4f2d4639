package shard

import (
	"math/bits"
	"sync"
	"sync/atomic"
)

// Frame size classes: powers of two from 1<<minFrameShift to
// 1<<maxFrameShift bytes. A typical push (JSON + header) is well under 1 KiB;
// a message at the default 64 KiB limit plus its header needs the 128 KiB
// class. Larger frames are not pooled.
const (
	minFrameShift = 6  // 64 B
	maxFrameShift = 17 // 128 KiB
)

var framePools [maxFrameShift - minFrameShift + 1]sync.Pool

// Frame is one encoded WebSocket frame (header and payload), built once per
// publish and shared, read-only, by every connection on every loop that
// delivers it. Its lifetime is governed by a reference count.
//
// Ownership: the goroutine that calls NewFrame owns the frame exclusively and
// may append to Buf until it first hands a reference to another goroutine
// (pushes it to an Inbox or a Queue). From then on Buf is immutable and any
// goroutine holding a reference may call Bytes, Retain and Release.
type Frame struct {
	// Buf is the encoded frame. The encoder writes it with
	// f.Buf = append(f.Buf[:0], ...) right after NewFrame; nobody writes it
	// after that.
	Buf []byte

	refs atomic.Int32

	// The compressed twin (permessage-deflate), built at most once, by
	// the first goroutine that asks (Twin); f itself when compression
	// does not pay. f holds one reference to it.
	twin   atomic.Pointer[Frame]
	twinMu sync.Mutex
}

// NewFrame returns a frame holding one reference (the caller's) whose Buf is
// empty with a capacity of at least capHint bytes, so that an encoder that
// knows the size appends without growing. It allocates only when the pool
// of the size class is empty or capHint is over 128 KiB.
func NewFrame(capHint int) *Frame {
	c := frameClass(capHint)
	if c < 0 {
		f := &Frame{Buf: make([]byte, 0, capHint)}
		f.refs.Store(1)
		return f
	}
	f, _ := framePools[c].Get().(*Frame)
	if f == nil {
		f = &Frame{Buf: make([]byte, 0, 1<<(c+minFrameShift))}
	}
	f.refs.Store(1)
	return f
}

// frameClass returns the pool index for a buffer of n bytes, or -1 when n is
// over the largest class.
func frameClass(n int) int {
	if n <= 1<<minFrameShift {
		return 0
	}
	if n > 1<<maxFrameShift {
		return -1
	}
	return bits.Len(uint(n-1)) - minFrameShift
}

// frameOverhead is what a queued reference costs besides the buffer: the
// Frame itself (48 bytes) and its slot in a queue's ring.
const frameOverhead = 56

// Cost is the memory a queued frame stands for: its buffer's capacity
// (frames are pooled in power-of-two classes) plus the Frame and a ring
// slot. Queue bounds count Cost, not Len, so a bound in bytes bounds memory.
func (f *Frame) Cost() int { return cap(f.Buf) + frameOverhead }

// Bytes returns the encoded frame. The slice is valid while the caller holds
// a reference and must not be modified. It does not allocate.
func (f *Frame) Bytes() []byte { return f.Buf }

// Len returns len(f.Bytes()).
func (f *Frame) Len() int { return len(f.Buf) }

// Retain adds a reference. The caller must already hold one. It does not
// allocate. Retaining a released frame panics.
func (f *Frame) Retain() {
	if f.refs.Add(1) <= 1 {
		panic("BUG: shard.Frame retained after its last release")
	}
}

// Release drops a reference; the last one returns the buffer to its pool.
// After Release the caller must not touch the frame or any slice obtained
// from Bytes. It does not allocate. A release without a matching reference
// panics; a double release is only detected while the frame is not yet
// reused from the pool.
func (f *Frame) Release() {
	n := f.refs.Add(-1)
	if n > 0 {
		return
	}
	if n < 0 {
		panic("BUG: shard.Frame released more often than retained")
	}
	if t := f.twin.Swap(nil); t != nil && t != f {
		t.Release()
	}
	// The encoder may have grown Buf beyond its class: file it under the
	// largest class it can serve, so that Get never hands out a short buffer.
	c := bits.Len(uint(cap(f.Buf))) - 1 - minFrameShift
	if c < 0 {
		return
	}
	if c >= len(framePools) {
		// A buffer over the largest class would pin memory in the pool.
		return
	}
	f.Buf = f.Buf[:0]
	framePools[c].Put(f)
}

// Twin returns f's other encoding, the same message compressed, building it
// with build the first time any goroutine asks: a publication is deflated
// once however many loops and subscribers want it compressed, and never if
// none does. build gets f and returns a new frame holding one reference,
// which f keeps until its last release, or nil when compression does not
// pay, in which case Twin returns f itself. The caller must hold a
// reference to f; it retains the twin like any frame it queues. Callers
// racing on the first call wait for the one that builds (one deflate of one
// message). Once built, Twin is one atomic load and does not allocate.
func (f *Frame) Twin(build func(*Frame) *Frame) *Frame {
	if t := f.twin.Load(); t != nil {
		return t
	}
	f.twinMu.Lock()
	t := f.twin.Load()
	if t == nil {
		if t = build(f); t == nil {
			t = f
		}
		f.twin.Store(t)
	}
	f.twinMu.Unlock()
	return t
}
