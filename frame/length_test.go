package frame

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"testing"
)

// header builds a masked client frame header with the given 7-bit length
// indicator and extended length bytes, and a zero mask, so that payload
// bytes behind it go over the wire as they are.
func header(b0, ind byte, ext ...byte) []byte {
	return append(append([]byte{b0, 0x80 | ind}, ext...), 0, 0, 0, 0)
}

func len16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func len64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// TestLengthOverflow holds the message size check to the limit when a
// continuation frame declares a length near 2^63: the sum with what the
// message already holds must not wrap and let every following byte into the
// assembly buffer.
func TestLengthOverflow(t *testing.T) {
	const max = 64 << 10
	payload := bytes.Repeat([]byte("a"), 1<<20) // valid UTF-8 for text
	tests := []struct {
		name  string
		first []byte // the opening fragment
		cont  uint64 // length the continuation declares
		err   error
		size  int // with err nil: the message delivered
	}{
		{
			name:  "1-byte text fragment then 2^63-1",
			first: text(false, "a"),
			cont:  math.MaxInt64,
			err:   ErrTooLarge,
		},
		{
			name:  "1-byte binary fragment then 2^63-1",
			first: clientFrame(false, 0, OpBinary, []byte{0}),
			cont:  math.MaxInt64,
			err:   ErrTooLarge,
		},
		{
			name:  "sum one past 2^63-1",
			first: clientFrame(false, 0, OpBinary, payload[:max-1]),
			cont:  math.MaxInt64 - (max - 1) + 1,
			err:   ErrTooLarge,
		},
		{
			name:  "one byte over the limit",
			first: clientFrame(false, 0, OpBinary, payload[:max-1]),
			cont:  2,
			err:   ErrTooLarge,
		},
		{
			name:  "exactly the limit",
			first: clientFrame(false, 0, OpBinary, payload[:max-1]),
			cont:  1,
			size:  max,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ind, ext := byte(127), len64(tc.cont)
			if tc.cont <= 125 {
				ind, ext = byte(tc.cont), nil
			}
			in := cat(tc.first, header(0x80, ind, ext...), payload[:min(uint64(len(payload)), tc.cont)])
			// 4 KiB reads, the way a socket delivers a flood; feed fails
			// the test as soon as the parser buffers more than max.
			var chunks []int
			for rest := len(in); rest > 0; rest -= min(4096, rest) {
				chunks = append(chunks, min(4096, rest))
			}
			events, err := feed(t, in, chunks, max)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if err != nil {
				if code := err.(*Error).Code; code != CloseTooLarge {
					t.Fatalf("close code %d, want %d", code, CloseTooLarge)
				}
				if len(events) != 0 {
					t.Fatalf("events %v before the error", events)
				}
				return
			}
			if len(events) != 1 || len(events[0].data) != tc.size {
				t.Fatalf("%d events, want one message of %d bytes", len(events), tc.size)
			}
		})
	}
}

// TestLengthEncoding requires every length in its shortest form (RFC 6455
// section 5.2) and refuses a bad one as soon as the length bytes are in,
// before the mask: for data frames with ErrBadLength, for control frames,
// whose 7-bit indicator alone already says too long, with ErrControlTooLong.
// Both close with 1002.
func TestLengthEncoding(t *testing.T) {
	const max = 1 << 17
	frag := text(false, "a")
	tests := []struct {
		name string
		in   []byte
		cut  int   // bytes after which the error must be reported
		err  error // nil: a valid frame of size bytes
		size int
	}{
		// Data frames.
		{name: "text 16-bit carrying 0", in: header(0x81, 126, len16(0)...), cut: 4, err: ErrBadLength},
		{name: "text 16-bit carrying 125", in: header(0x81, 126, len16(125)...), cut: 4, err: ErrBadLength},
		{name: "binary 16-bit carrying 126", in: cat(header(0x82, 126, len16(126)...), make([]byte, 126)), cut: 4, size: 126},
		{name: "binary 64-bit carrying 0", in: header(0x82, 127, len64(0)...), cut: 10, err: ErrBadLength},
		{name: "binary 64-bit carrying 125", in: header(0x82, 127, len64(125)...), cut: 10, err: ErrBadLength},
		{name: "binary 64-bit carrying 0xffff", in: header(0x82, 127, len64(0xffff)...), cut: 10, err: ErrBadLength},
		{name: "binary 64-bit carrying 0x10000", in: cat(header(0x82, 127, len64(0x10000)...), make([]byte, 0x10000)), cut: 10, size: 0x10000},
		{name: "binary 64-bit top bit set", in: header(0x82, 127, len64(1<<63)...), cut: 10, err: ErrBadLength},
		{name: "binary 64-bit all ones", in: header(0x82, 127, len64(math.MaxUint64)...), cut: 10, err: ErrBadLength},
		{name: "unfinished text 64-bit carrying 200", in: header(0x01, 127, len64(200)...), cut: 10, err: ErrBadLength},
		{name: "continuation 16-bit carrying 3", in: cat(frag, header(0x80, 126, len16(3)...)), cut: len(frag) + 4, err: ErrBadLength},
		{name: "continuation 64-bit carrying 300", in: cat(frag, header(0x80, 127, len64(300)...)), cut: len(frag) + 10, err: ErrBadLength},
		// Control frames.
		{name: "ping 16-bit carrying 5", in: cat(header(0x89, 126, len16(5)...), []byte("hello")), cut: 2, err: ErrControlTooLong},
		{name: "pong 64-bit carrying 0", in: header(0x8a, 127, len64(0)...), cut: 2, err: ErrControlTooLong},
		{name: "close 64-bit top bit set", in: header(0x88, 127, len64(1<<63)...), cut: 2, err: ErrControlTooLong},
		{name: "ping 7-bit carrying 125", in: cat(header(0x89, 125), make([]byte, 125)), cut: 2, size: 125},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := feed(t, tc.in[:tc.cut], []int{tc.cut}, max)
			if !errors.Is(err, tc.err) {
				t.Fatalf("with the first %d bytes: err %v, want %v", tc.cut, err, tc.err)
			}
			if err != nil {
				if code := err.(*Error).Code; code != CloseProtocolError {
					t.Fatalf("close code %d, want %d", code, CloseProtocolError)
				}
			}
			ones := make([]int, len(tc.in))
			for i := range ones {
				ones[i] = 1
			}
			for _, chunks := range [][]int{{len(tc.in)}, ones} {
				events, err := feed(t, tc.in, chunks, max)
				label := fmt.Sprintf("%d reads", len(chunks))
				if !errors.Is(err, tc.err) {
					t.Fatalf("%s: err %v, want %v", label, err, tc.err)
				}
				last := len(events) - 1
				switch {
				case tc.err != nil && len(events) != 0:
					t.Fatalf("%s: events %v before the error", label, events)
				case tc.err == nil && (last < 0 || len(events[last].data) != tc.size):
					t.Fatalf("%s: %d events, want the last of %d bytes", label, len(events), tc.size)
				}
			}
		})
	}
}
