package frame

import (
	"bytes"
	"strconv"
	"testing"
)

func BenchmarkParse(b *testing.B) {
	for _, size := range []int{64, 1024, 16384} {
		msg := clientFrame(true, 0, OpText, bytes.Repeat([]byte("a"), size))
		buf := make([]byte, len(msg))
		b.Run(byteSize(size), func(b *testing.B) {
			var p Parser
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				copy(buf, msg)
				if _, err := p.Parse(buf, 64<<10, nopHandler{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAppendFrame(b *testing.B) {
	payload := bytes.Repeat([]byte("a"), 1024)
	out := make([]byte, 0, 2048)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		out = AppendFrame(out[:0], OpText, payload)
	}
}

func byteSize(n int) string { return strconv.Itoa(n) + "B" }
