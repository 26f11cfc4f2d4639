package shard

import (
	"strconv"
	"sync/atomic"
	"testing"
)

func newBenchHub(channels int) (*Hub, []string) {
	h := NewHub()
	names := make([]string, channels)
	for i := range names {
		names[i] = "chat:room" + strconv.Itoa(i)
		h.Add(names[i], i%4)
		h.Add(names[i], 200)
	}
	return h, names
}

// BenchmarkHubShardsSameChannel is every goroutine publishing to one hot
// channel.
func BenchmarkHubShardsSameChannel(b *testing.B) {
	h, names := newBenchHub(1)
	var sink atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		n := 0
		for pb.Next() {
			set := h.Shards(names[0])
			n += set.Next(0)
		}
		sink.Add(int64(n))
	})
}

// BenchmarkHubShardsManyChannels is every goroutine publishing to channels
// spread over the stripes.
func BenchmarkHubShardsManyChannels(b *testing.B) {
	h, names := newBenchHub(1000)
	var sink atomic.Int64
	var next atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(7919))
		n := 0
		for pb.Next() {
			set := h.Shards(names[i%len(names)])
			n += set.Next(0)
			i++
		}
		sink.Add(int64(n))
	})
}

func BenchmarkHubAddRemove(b *testing.B) {
	h, names := newBenchHub(1000)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		h.Add(names[i%len(names)], 9)
		h.Remove(names[i%len(names)], 9)
		i++
	}
}
