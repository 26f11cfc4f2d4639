package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"math"
	"testing"
	"time"

	"github.com/wsedge/wsedge/frame"
)

// hostileHeader is a masked client frame header (zero mask) with a 16-bit
// or 64-bit extended length, whatever the value, so that tests can send
// lengths a well-behaved encoder never would.
func hostileHeader(b0 byte, ext16 bool, length uint64) []byte {
	if ext16 {
		return append(binary.BigEndian.AppendUint16([]byte{b0, 0x80 | 126}, uint16(length)), 0, 0, 0, 0)
	}
	return append(binary.BigEndian.AppendUint64([]byte{b0, 0x80 | 127}, length), 0, 0, 0, 0)
}

// maxParserBuffered reports the largest parser assembly buffer among the
// server's connections, read on each loop's own goroutine.
func (s *Server) maxParserBuffered() int {
	most := 0
	for _, l := range *s.list.Load() {
		done := make(chan int)
		_ = l.el.Execute(context.Background(), runnable(func() {
			n := 0
			l.wheel.each(func(c *conn) { n = max(n, c.parser.Buffered()) })
			done <- n
		}))
		most = max(most, <-done)
	}
	return most
}

// TestHostileLengthOverflow sends a 1-byte text fragment, then a
// continuation declaring 2^63-1 bytes and a flood behind it. The declared
// length must be refused with 1009 as soon as it arrives; were the size
// check to wrap, every flooded byte would pile up in the parser.
func TestHostileLengthOverflow(t *testing.T) {
	s := startServer(t, nil)
	limit := s.cfg.MaxMessage
	if limit != 64<<10 {
		t.Fatalf("default max message %d, this test is written for 64 KiB", limit)
	}
	c := handshake(t, s.Addr())
	c.send(masked(false, frame.OpText, []byte("a")))
	c.send(hostileHeader(0x80, false, math.MaxInt64))
	// The server discards what follows its close frame (the stream cannot
	// be parsed any more) until its close timeout, so the writes succeed;
	// the parser's buffer is what must stay bounded.
	chunk := bytes.Repeat([]byte("a"), 64<<10) // valid UTF-8 under a zero mask
	for sent := 0; sent < 1<<20; sent += len(chunk) {
		if _, err := c.nc.Write(chunk); err != nil {
			break
		}
		if b := s.maxParserBuffered(); b > limit {
			t.Fatalf("after %d flooded bytes the parser buffers %d, max message %d", sent+len(chunk), b, limit)
		}
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if reason := c.expectClose(frame.CloseTooLarge); reason != frame.ErrTooLarge.Reason {
		t.Fatalf("close reason %q, want %q", reason, frame.ErrTooLarge.Reason)
	}
	if b := s.maxParserBuffered(); b > limit {
		t.Fatalf("parser buffers %d after the close, max message %d", b, limit)
	}
}

// TestHostileNonMinimalLength requires lengths in their shortest form (RFC
// 6455 section 5.2): anything else closes with 1002.
func TestHostileNonMinimalLength(t *testing.T) {
	s := startServer(t, nil)
	tests := []struct {
		name string
		in   []byte
	}{
		{name: "text 16-bit carrying 5", in: append(hostileHeader(0x81, true, 5), "hello"...)},
		{name: "binary 64-bit carrying 200", in: append(hostileHeader(0x82, false, 200), make([]byte, 200)...)},
		{name: "binary 64-bit top bit set", in: hostileHeader(0x82, false, 1<<63)},
		{name: "continuation 16-bit carrying 3", in: append(append(masked(false, frame.OpText, []byte("a")), hostileHeader(0x80, true, 3)...), "bcd"...)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := handshake(t, s.Addr())
			c.send(tc.in)
			_ = c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			if reason := c.expectClose(frame.CloseProtocolError); reason != frame.ErrBadLength.Reason {
				t.Fatalf("close reason %q, want %q", reason, frame.ErrBadLength.Reason)
			}
		})
	}
}
