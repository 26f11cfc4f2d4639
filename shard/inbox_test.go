package shard

import (
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// drainAll drains q completely and returns the messages in order.
func drainAll[T any](q *Inbox[T]) []T {
	var got []T
	for {
		_, more := q.Drain(1<<30, func(v T) { got = append(got, v) })
		if !more {
			return got
		}
	}
}

func seq(from, to int) []int {
	var s []int
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

func TestInboxSizeRoundsUp(t *testing.T) {
	tests := []struct {
		size int
		want int
	}{
		{
			size: 0,
			want: 2,
		},
		{
			size: 2,
			want: 2,
		},
		{
			size: 3,
			want: 4,
		},
		{
			size: 1000,
			want: 1024,
		},
	}
	for _, tt := range tests {
		if got := len(NewInbox[int](tt.size).cells); got != tt.want {
			t.Errorf("NewInbox(%d): %d cells, want %d", tt.size, got, tt.want)
		}
	}
}

func TestInboxWakesOncePerIdlePeriod(t *testing.T) {
	q := NewInbox[int](8)
	var wakes []bool
	for i := range 3 {
		wakes = append(wakes, q.Push(i))
	}
	if !slices.Equal(wakes, []bool{true, false, false}) {
		t.Fatalf("wakes %v, want [true false false]", wakes)
	}
	if q.Len() != 3 {
		t.Fatalf("Len %d, want 3", q.Len())
	}
	if got := drainAll(q); !slices.Equal(got, seq(0, 3)) {
		t.Fatalf("drained %v", got)
	}
	if !q.Push(3) {
		t.Fatal("first Push after a Drain that emptied the inbox did not wake")
	}
	if q.Push(4) {
		t.Fatal("second Push woke again")
	}
}

func TestInboxOverflowKeepsOrder(t *testing.T) {
	q := NewInbox[int](4)
	for i := range 10 {
		q.Push(i)
	}
	if q.Overflowed() != 6 {
		t.Fatalf("Overflowed %d, want 6", q.Overflowed())
	}
	if q.Len() != 10 {
		t.Fatalf("Len %d, want 10", q.Len())
	}
	if got := drainAll(q); !slices.Equal(got, seq(0, 10)) {
		t.Fatalf("drained %v", got)
	}
	q.Push(10)
	if q.Overflowed() != 6 {
		t.Fatalf("Push after the overflow drained went to overflow (%d)", q.Overflowed())
	}
}

func TestInboxOverflowDivertsUntilTaken(t *testing.T) {
	q := NewInbox[int](4)
	for i := range 5 { // 4 in the ring, 1 in overflow
		q.Push(i)
	}
	var got []int
	// Take two from the ring: there is room again, but pushes must go on
	// to the overflow list so that they stay behind message 4.
	if n, more := q.Drain(2, func(v int) { got = append(got, v) }); n != 2 || !more {
		t.Fatalf("Drain(2) = %d, %v", n, more)
	}
	q.Push(5)
	q.Push(6)
	if q.Overflowed() != 3 {
		t.Fatalf("Overflowed %d, want 3", q.Overflowed())
	}
	got = append(got, drainAll(q)...)
	if !slices.Equal(got, seq(0, 7)) {
		t.Fatalf("drained %v", got)
	}
}

func TestInboxDrainMaxLeavesRest(t *testing.T) {
	q := NewInbox[int](4)
	for i := range 7 {
		q.Push(i)
	}
	var got []int
	for _, max := range []int{1, 2, 3, 4} {
		n, more := q.Drain(max, func(v int) { got = append(got, v) })
		if q.Push(100 + max) {
			t.Fatalf("Push woke while a Drain batch was pending")
		}
		if !more {
			t.Fatalf("Drain(%d) = %d, more=false with messages left", max, n)
		}
	}
	got = append(got, drainAll(q)...)
	want := append(seq(0, 7), 101, 102, 103, 104)
	if !slices.Equal(got, want) {
		t.Fatalf("drained %v, want %v", got, want)
	}
}

func TestInboxDrainCallbackMayPush(t *testing.T) {
	q := NewInbox[int](2)
	q.Push(0)
	var got []int
	n, more := q.Drain(100, func(v int) {
		got = append(got, v)
		if v < 9 {
			q.Push(v + 1) // through the ring and the overflow list
		}
	})
	if n != 10 || more {
		t.Fatalf("Drain = %d, %v; want 10, false", n, more)
	}
	if !slices.Equal(got, seq(0, 10)) {
		t.Fatalf("drained %v", got)
	}
}

func TestInboxReleasesMessages(t *testing.T) {
	q := NewInbox[*int](4)
	for range 6 {
		q.Push(new(int))
	}
	drainAll(q)
	for i := range q.cells {
		if q.cells[i].v != nil {
			t.Fatalf("cell %d still points to a message", i)
		}
	}
	for i, v := range q.ov[:cap(q.ov)] {
		if v != nil {
			t.Fatalf("overflow slot %d still points to a message", i)
		}
	}
}

func TestInboxNoAllocs(t *testing.T) {
	q := NewInbox[Msg](64)
	f := &Frame{}
	var sink int
	fn := func(m Msg) { sink += int(m.Conn) }
	allocs := testing.AllocsPerRun(1000, func() {
		for i := range 32 {
			q.Push(Msg{Kind: 1, Conn: uint64(i), Frame: f})
		}
		q.Drain(64, fn)
	})
	if allocs != 0 {
		t.Fatalf("Push×32+Drain: %v allocs, want 0", allocs)
	}
}

// TestInboxStress runs producers against a consumer that, like an event
// loop, drains only when woken. Producers push in rounds and wait for the
// consumer to catch up after each, so that many pushes race with the end of
// a Drain. Every message must arrive exactly once and in its producer's
// order, no wake-up may be lost (the round would never complete) and none
// may be doubled (a wake while one is pending).
func TestInboxStress(t *testing.T) {
	tests := []struct {
		name      string
		ring      int
		producers int
		rounds    int
		perRound  int
		batch     int
	}{
		{
			name:      "small ring, mostly overflow",
			ring:      8,
			producers: 8,
			rounds:    20,
			perRound:  1000,
			batch:     16,
		},
		{
			name:      "ring large enough",
			ring:      4096,
			producers: 8,
			rounds:    20,
			perRound:  100,
			batch:     256,
		},
		{
			name:      "batch of one",
			ring:      64,
			producers: 4,
			rounds:    20,
			perRound:  500,
			batch:     1,
		},
		{
			name:      "many short rounds",
			ring:      16,
			producers: 4,
			rounds:    5000,
			perRound:  2,
			batch:     64,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			type msg struct {
				producer int
				seq      int
			}
			q := NewInbox[msg](tt.ring)
			wake := make(chan struct{}, 1)
			signal := func() {
				select {
				case wake <- struct{}{}:
				default:
					t.Error("wake-up while another is pending")
				}
			}
			var delivered atomic.Int64
			stop := make(chan struct{})
			done := make(chan error, 1)
			go func() {
				next := make([]int, tt.producers)
				var err error
				for {
					select {
					case <-wake:
					case <-stop:
						done <- err
						return
					}
					_, more := q.Drain(tt.batch, func(m msg) {
						if m.seq != next[m.producer] && err == nil {
							err = fmt.Errorf("producer %d: got seq %d, want %d", m.producer, m.seq, next[m.producer])
						}
						next[m.producer] = m.seq + 1
						delivered.Add(1)
					})
					if more {
						signal()
					}
				}
			}()
			for r := range tt.rounds {
				var wg sync.WaitGroup
				for p := range tt.producers {
					wg.Go(func() {
						for i := range tt.perRound {
							if q.Push(msg{producer: p, seq: r*tt.perRound + i}) {
								signal()
							}
						}
					})
				}
				wg.Wait()
				want := int64((r + 1) * tt.producers * tt.perRound)
				deadline := time.Now().Add(10 * time.Second)
				for delivered.Load() != want {
					if time.Now().After(deadline) {
						close(stop)
						t.Fatalf("round %d: %d of %d delivered, %d waiting: lost wake-up", r, delivered.Load(), want, q.Len())
					}
					runtime.Gosched()
				}
			}
			close(stop)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if q.Len() != 0 {
				t.Fatalf("Len %d after all messages drained", q.Len())
			}
			t.Logf("overflowed %d of %d", q.Overflowed(), tt.rounds*tt.producers*tt.perRound)
		})
	}
}
