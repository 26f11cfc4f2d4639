package shard

import "testing"

func BenchmarkFrameNewRelease(b *testing.B) {
	payload := make([]byte, 100)
	b.ReportAllocs()
	for b.Loop() {
		f := NewFrame(len(payload))
		f.Buf = append(f.Buf[:0], payload...)
		f.Release()
	}
}

func BenchmarkFrameRetainReleaseParallel(b *testing.B) {
	f := NewFrame(10)
	defer f.Release()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			f.Retain()
			f.Release()
		}
	})
}
