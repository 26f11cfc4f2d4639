package shard

import (
	"runtime"
	"sync/atomic"
	"testing"
)

// BenchmarkInboxPushDrain is one goroutine pushing and draining in batches
// of 64: the uncontended cost per message.
func BenchmarkInboxPushDrain(b *testing.B) {
	q := NewInbox[Msg](1024)
	f := &Frame{}
	var sink uint64
	fn := func(m Msg) { sink += m.Conn }
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		q.Push(Msg{Kind: 1, Conn: uint64(i), Frame: f})
		if i++; i == 64 {
			q.Drain(64, fn)
			i = 0
		}
	}
	q.Drain(1<<30, fn)
}

// BenchmarkInboxPushParallel is GOMAXPROCS producers and one consumer
// goroutine that drains when woken, as a loop would: ns/op is per message
// pushed (and delivered).
func BenchmarkInboxPushParallel(b *testing.B) {
	q := NewInbox[Msg](4096)
	wake := make(chan struct{}, 1)
	stop := make(chan struct{})
	exited := make(chan struct{})
	var delivered atomic.Int64
	fn := func(Msg) { delivered.Add(1) }
	go func() {
		defer close(exited)
		for {
			select {
			case <-wake:
			case <-stop:
				return
			}
			if _, more := q.Drain(256, fn); more {
				wake <- struct{}{}
			}
		}
	}()
	f := &Frame{}
	var pushed atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		n := int64(0)
		for pb.Next() {
			if q.Push(Msg{Kind: 1, Frame: f}) {
				wake <- struct{}{}
			}
			n++
		}
		pushed.Add(n)
	})
	for delivered.Load() != pushed.Load() {
		// The consumer has been woken for everything pushed; let it finish.
		select {
		case <-exited:
			b.Fatal("consumer exited early")
		default:
			runtime.Gosched()
		}
	}
	close(stop)
	<-exited
	b.ReportMetric(float64(q.Overflowed())/float64(pushed.Load()), "overflow/op")
}
