package shard

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unsafe"
)

// fakeConn is a Writer that records what was written, like a socket that
// takes everything.
type fakeConn struct {
	buffered int
	calls    int
	iovLens  []int
	out      []byte
	err      error
	during   func() // runs inside Writev, as gnet's OnClose can
}

func (c *fakeConn) Writev(bs [][]byte) (int, error) {
	if c.during != nil {
		c.during()
	}
	c.calls++
	c.iovLens = append(c.iovLens, len(bs))
	n := 0
	for _, b := range bs {
		c.out = append(c.out, b...)
		n += len(b)
	}
	return n, c.err
}

func (c *fakeConn) OutboundBuffered() int { return c.buffered }

// newTestFrame returns a frame whose buffer is exactly s, so that its Cost
// is len(s) + frameOverhead.
func newTestFrame(s string) *Frame {
	b := make([]byte, len(s)) // cap == len, unlike []byte(s)
	copy(b, s)
	f := &Frame{Buf: b}
	f.refs.Store(1)
	return f
}

// cost is the Cost of test frames of these lengths.
func cost(lens ...int) int {
	n := 0
	for _, l := range lens {
		n += l + frameOverhead
	}
	return n
}

func TestQueueZeroValueIsEmptyAndSmall(t *testing.T) {
	var q Queue
	if q.Len() != 0 || q.Bytes() != 0 {
		t.Fatalf("zero Queue: Len %d Bytes %d", q.Len(), q.Bytes())
	}
	if size := unsafe.Sizeof(Queue{}); size != 2*unsafe.Sizeof(uintptr(0)) {
		t.Fatalf("Sizeof(Queue{}) = %d, want two pointers", size)
	}
	c := &fakeConn{}
	if n, err := q.Flush(c, nil); n != 0 || err != nil || c.calls != 0 {
		t.Fatalf("Flush of empty queue: n %d err %v calls %d", n, err, c.calls)
	}
	q.Reset()
}

func TestQueuePushBounds(t *testing.T) {
	tests := []struct {
		name     string
		frames   []string
		maxBytes int
		maxMsgs  int
		want     []bool
	}{
		{
			name:     "within bounds",
			frames:   []string{"aa", "bb", "cc"},
			maxBytes: cost(2, 2, 2),
			maxMsgs:  3,
			want:     []bool{true, true, true},
		},
		{
			name:     "message bound",
			frames:   []string{"a", "b", "c"},
			maxBytes: cost(1, 1, 1, 1),
			maxMsgs:  2,
			want:     []bool{true, true, false},
		},
		{
			name:     "one message allowed",
			frames:   []string{"a", "b"},
			maxBytes: cost(1, 1, 1),
			maxMsgs:  1,
			want:     []bool{true, false},
		},
		{
			name:     "byte bound",
			frames:   []string{"aaa", "bbb", "c"},
			maxBytes: cost(3, 2),
			maxMsgs:  10,
			want:     []bool{true, false, true},
		},
		{
			name:     "first frame too big",
			frames:   []string{"aaaaaa"},
			maxBytes: cost(5),
			maxMsgs:  10,
			want:     []bool{false},
		},
		{
			name:     "no messages allowed",
			frames:   []string{"a"},
			maxBytes: cost(5),
			maxMsgs:  0,
			want:     []bool{false},
		},
		{
			name:     "grows past initial storage",
			frames:   []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10"},
			maxBytes: cost(2, 2, 2, 2, 2, 2, 2, 2, 2, 2),
			maxMsgs:  100,
			want:     []bool{true, true, true, true, true, true, true, true, true, true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var q Queue
			var wantOut []byte
			wantCost := 0
			for i, s := range tt.frames {
				f := newTestFrame(s)
				if got := q.Push(f, tt.maxBytes, tt.maxMsgs); got != tt.want[i] {
					t.Fatalf("Push(%q) = %v, want %v", s, got, tt.want[i])
				}
				if tt.want[i] {
					wantOut = append(wantOut, s...)
					wantCost += cost(len(s))
					if f.refs.Load() != 2 {
						t.Fatalf("pushed frame refs %d, want 2", f.refs.Load())
					}
				} else if f.refs.Load() != 1 {
					t.Fatalf("refused frame refs %d, want 1", f.refs.Load())
				}
				f.Release()
			}
			if q.Bytes() != wantCost {
				t.Fatalf("Bytes() = %d, want %d", q.Bytes(), wantCost)
			}
			c := &fakeConn{}
			n, err := q.Flush(c, make([][]byte, 0, 16))
			if err != nil || n != len(wantOut) {
				t.Fatalf("Flush: n %d err %v, want %d", n, err, len(wantOut))
			}
			if !bytes.Equal(c.out, wantOut) {
				t.Fatalf("wrote %q, want %q", c.out, wantOut)
			}
			if len(wantOut) > 0 && c.calls != 1 {
				t.Fatalf("Flush made %d Writev calls, want 1", c.calls)
			}
			if q.Len() != 0 || q.r != nil || q.one != nil {
				t.Fatalf("queue not reset after Flush: Len %d", q.Len())
			}
		})
	}
}

func TestQueueFlushWaitsWhileGnetBuffers(t *testing.T) {
	var q Queue
	f := newTestFrame("x")
	q.Push(f, cost(10), 10)
	c := &fakeConn{buffered: 1}
	if n, err := q.Flush(c, nil); n != 0 || err != nil || c.calls != 0 {
		t.Fatalf("Flush while buffered: n %d err %v calls %d", n, err, c.calls)
	}
	if q.Len() != 1 || f.refs.Load() != 2 {
		t.Fatalf("frame not kept: Len %d refs %d", q.Len(), f.refs.Load())
	}
	c.buffered = 0
	if n, _ := q.Flush(c, nil); n != 1 || string(c.out) != "x" {
		t.Fatalf("Flush after drain: n %d out %q", n, c.out)
	}
	if f.refs.Load() != 1 {
		t.Fatalf("refs after Flush %d, want 1", f.refs.Load())
	}
	f.Release()
}

func TestQueueFlushSplitsAtMaxIOV(t *testing.T) {
	var q Queue
	f := newTestFrame("y")
	for range MaxIOV + 5 {
		if !q.Push(f, 1<<20, 1<<20) {
			t.Fatal("Push refused")
		}
	}
	c := &fakeConn{}
	n, err := q.Flush(c, make([][]byte, 0, MaxIOV))
	if err != nil || n != MaxIOV+5 {
		t.Fatalf("Flush: n %d err %v", n, err)
	}
	if fmt.Sprint(c.iovLens) != fmt.Sprint([]int{MaxIOV, 5}) {
		t.Fatalf("Writev iov lengths %v, want [%d 5]", c.iovLens, MaxIOV)
	}
	if f.refs.Load() != 1 {
		t.Fatalf("refs %d, want 1", f.refs.Load())
	}
	f.Release()
}

func TestQueueFlushErrorReleases(t *testing.T) {
	var q Queue
	f := newTestFrame("z")
	q.Push(f, cost(10), 10)
	boom := errors.New("boom")
	if _, err := q.Flush(&fakeConn{err: boom}, nil); !errors.Is(err, boom) {
		t.Fatalf("Flush err %v, want %v", err, boom)
	}
	if q.Len() != 0 || f.refs.Load() != 1 {
		t.Fatalf("after failed Flush: Len %d refs %d", q.Len(), f.refs.Load())
	}
	f.Release()
}

// TestQueueResetInsideWritev is gnet closing the connection on a write
// error from inside Writev: the engine's OnClose resets the queue.
func TestQueueResetInsideWritev(t *testing.T) {
	for _, frames := range []int{1, 3} {
		t.Run(fmt.Sprint(frames, " frames"), func(t *testing.T) {
			var q Queue
			f := newTestFrame("w")
			for range frames {
				q.Push(f, cost(100)*100, 100)
			}
			boom := errors.New("boom")
			c := &fakeConn{err: boom, during: q.Reset}
			if _, err := q.Flush(c, make([][]byte, 0, 4)); !errors.Is(err, boom) {
				t.Fatalf("Flush err %v, want %v", err, boom)
			}
			if string(c.out) != strings.Repeat("w", frames) {
				t.Fatalf("wrote %q", c.out)
			}
			if q.Len() != 0 || f.refs.Load() != 1 {
				t.Fatalf("after Flush: Len %d refs %d, want 0 and 1", q.Len(), f.refs.Load())
			}
			f.Release()
		})
	}
}

func TestQueueResetReleases(t *testing.T) {
	var q Queue
	f := newTestFrame("r")
	for range 20 {
		q.Push(f, cost(100)*100, 100)
	}
	q.Reset()
	if q.Len() != 0 || q.r != nil || f.refs.Load() != 1 {
		t.Fatalf("after Reset: Len %d refs %d", q.Len(), f.refs.Load())
	}
	q.Push(f, cost(100)*100, 100)
	q.Reset()
	if q.Len() != 0 || q.one != nil || f.refs.Load() != 1 {
		t.Fatalf("after Reset of one frame: Len %d refs %d", q.Len(), f.refs.Load())
	}
	f.Release()
}

// nopConn is a Writer that takes everything without copying, so that
// allocation tests measure the queue alone.
type nopConn struct{}

func (nopConn) Writev(bs [][]byte) (int, error) {
	n := 0
	for _, b := range bs {
		n += len(b)
	}
	return n, nil
}

func (nopConn) OutboundBuffered() int { return 0 }

// TestFanOutAllocs is the issue's "1 publish to 10,000 subscribers allocates
// O(1) payload buffers": one frame referenced from 10,000 queues, flushed and
// released, allocates nothing in steady state.
func TestFanOutAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under -race")
	}
	const subscribers = 10_000
	queues := make([]Queue, subscribers)
	iov := make([][]byte, 0, 64)
	payload := bytes.Repeat([]byte{'p'}, 200)
	publish := func() {
		f := NewFrame(len(payload))
		f.Buf = append(f.Buf[:0], payload...)
		for i := range queues {
			if !queues[i].Push(f, 1<<18, 1024) {
				panic("Push refused")
			}
		}
		f.Release()
		for i := range queues {
			queues[i].Flush(nopConn{}, iov)
		}
	}
	publish()
	allocs := testing.AllocsPerRun(20, publish)
	if perRef := allocs / subscribers; perRef != 0 {
		t.Fatalf("%v allocs per publish to %d queues (%v per queued reference), want 0", allocs, subscribers, perRef)
	}
	for i := range queues {
		if queues[i].Len() != 0 {
			t.Fatalf("queue %d not drained", i)
		}
	}
}

func TestQueueSteadyStateNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under -race")
	}
	var q Queue
	f := newTestFrame("steady")
	defer f.Release()
	iov := make([][]byte, 0, 64)
	run := func() {
		for range 40 {
			q.Push(f, 1<<18, 64)
		}
		q.Flush(nopConn{}, iov)
	}
	run()
	if allocs := testing.AllocsPerRun(1000, run); allocs != 0 {
		t.Fatalf("Push×40+Flush: %v allocs, want 0", allocs)
	}
}

// TestQueueCountsCost: a queue bound is a bound on memory, so a pooled
// frame counts its class capacity, not its length.
func TestQueueCountsCost(t *testing.T) {
	f := NewFrame(100)
	f.Buf = append(f.Buf[:0], strings.Repeat("p", 100)...)
	if f.Cost() != cap(f.Buf)+frameOverhead || cap(f.Buf) < 100 {
		t.Fatalf("Cost %d for len %d cap %d", f.Cost(), f.Len(), cap(f.Buf))
	}
	var q Queue
	if q.Push(f, f.Cost()-1, 10) {
		t.Fatal("a frame over the bound by its cost was queued")
	}
	if !q.Push(f, f.Cost(), 10) || q.Bytes() != f.Cost() {
		t.Fatalf("Bytes %d, want %d", q.Bytes(), f.Cost())
	}
	q.Reset()
	f.Release()
}
