package shard

import (
	"strconv"
	"testing"
)

// BenchmarkQueuePushFlush measures one connection receiving a batch of
// frames and flushing them with one Writev: ns/op is per frame.
func BenchmarkQueuePushFlush(b *testing.B) {
	for _, batch := range []int{1, 8, 64} {
		b.Run(strconv.Itoa(batch), func(b *testing.B) {
			var q Queue
			f := newTestFrame("benchmark frame payload")
			defer f.Release()
			iov := make([][]byte, 0, batch)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				q.Push(f, 1<<18, 1024)
				if i++; i == batch {
					q.Flush(nopConn{}, iov)
					i = 0
				}
			}
			q.Reset()
		})
	}
}

// BenchmarkFanOut measures one publish delivered to 10,000 queues and
// flushed: ns/op divided by 10,000 is the per-subscriber cost.
func BenchmarkFanOut(b *testing.B) {
	queues := make([]Queue, 10_000)
	iov := make([][]byte, 0, 8)
	payload := make([]byte, 64)
	b.ReportAllocs()
	for b.Loop() {
		f := NewFrame(len(payload))
		f.Buf = append(f.Buf[:0], payload...)
		for i := range queues {
			queues[i].Push(f, 1<<18, 1024)
		}
		f.Release()
		for i := range queues {
			queues[i].Flush(nopConn{}, iov)
		}
	}
}

// BenchmarkDelivery is the loop's side of one publish to 10,000
// subscribers (inbox, index, queues, one flush each to a discarding
// writer): ns/op divided by 10,000 is the cost per delivery, excluding the
// syscall.
func BenchmarkDelivery(b *testing.B) {
	l, channel := newDeliveryLoop(10_000)
	publish := deliveryRound(l, channel)
	b.ReportAllocs()
	for b.Loop() {
		publish()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/10_000, "ns/delivery")
}
