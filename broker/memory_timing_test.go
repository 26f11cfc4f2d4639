package broker

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

func BenchmarkMemoryPublish(b *testing.B) {
	data := []byte(`{"text":"0123456789012345678901234567890123456789012345678901"}`)
	opts := PublishOptions{HistorySize: 100, HistoryTTL: time.Minute}
	benches := []struct {
		name     string
		channels int
	}{
		{
			name:     "one_channel",
			channels: 1,
		},
		{
			name:     "1000_channels",
			channels: 1000,
		},
	}
	for _, bb := range benches {
		b.Run(bb.name, func(b *testing.B) {
			m, err := NewMemory(MemoryConfig{})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			m.SetHandler(func(string, Publication) {})
			chs := make([]string, bb.channels)
			for i := range chs {
				chs[i] = "chat:" + strconv.Itoa(i)
				if err := m.Subscribe(context.Background(), chs[i]); err != nil {
					b.Fatal(err)
				}
			}
			var next atomic.Uint64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(7919))
				for pb.Next() {
					i++
					if _, err := m.Publish(context.Background(), chs[i%len(chs)], data, opts); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

func BenchmarkMemoryHistoryRecovery(b *testing.B) {
	m, err := NewMemory(MemoryConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	var pos StreamPosition
	for i := 0; i < 100; i++ {
		if pos, err = m.Publish(ctx, "chat:1", []byte(`{"n":1}`), PublishOptions{HistorySize: 100}); err != nil {
			b.Fatal(err)
		}
	}
	since := StreamPosition{Offset: pos.Offset - 10, Epoch: pos.Epoch}
	b.ReportAllocs()
	for b.Loop() {
		res, err := m.History(ctx, "chat:1", HistoryRequest{Since: &since, Limit: NoLimit})
		if err != nil || !res.Recovered {
			b.Fatal(res, err)
		}
	}
}
