package shard

import "testing"

// BenchmarkIndexFanOut visits 1,000 subscribers of one channel: ns/op
// divided by 1,000 is the per-subscriber lookup cost of a fan-out.
func BenchmarkIndexFanOut(b *testing.B) {
	x := NewIndex[*testConn]()
	for i := range 1000 {
		x.Add("chat:room42", &testConn{id: i})
	}
	var sink int
	b.ReportAllocs()
	for b.Loop() {
		for _, s := range x.Subs("chat:room42") {
			sink += s.Conn.id
		}
	}
}

func BenchmarkIndexAddRemove(b *testing.B) {
	x := NewIndex[*testConn]()
	for i := range 1000 {
		x.Add("chat:room42", &testConn{id: i})
	}
	c := &testConn{}
	b.ReportAllocs()
	for b.Loop() {
		s, _ := x.Add("chat:room42", c)
		x.Remove(s)
	}
}
