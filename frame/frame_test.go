package frame

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// event is one thing a Parser reported, in a comparable form.
type event struct {
	kind string // "msg", "ping", "pong", "close"
	op   OpCode
	code CloseCode
	data string
}

type recorder struct{ events []event }

func (r *recorder) OnMessage(op OpCode, p []byte) error {
	r.events = append(r.events, event{kind: "msg", op: op, data: string(p)})
	return nil
}
func (r *recorder) OnPing(p []byte) error {
	r.events = append(r.events, event{kind: "ping", data: string(p)})
	return nil
}
func (r *recorder) OnPong(p []byte) error {
	r.events = append(r.events, event{kind: "pong", data: string(p)})
	return nil
}
func (r *recorder) OnClose(c CloseCode, reason []byte) error {
	r.events = append(r.events, event{kind: "close", code: c, data: string(reason)})
	return nil
}

// clientFrame builds a masked client frame. rsv is placed in bits 4–6 of
// the first byte.
func clientFrame(fin bool, rsv byte, op OpCode, payload []byte) []byte {
	out := AppendClientFrame(nil, fin, op, payload, [4]byte{0x37, 0xfa, 0x21, 0x3d})
	out[0] |= rsv << 4
	return out
}

func text(fin bool, s string) []byte { return clientFrame(fin, 0, OpText, []byte(s)) }
func cont(fin bool, s string) []byte { return clientFrame(fin, 0, OpContinuation, []byte(s)) }
func closeF(code uint16, r string) []byte {
	p := binary.BigEndian.AppendUint16(nil, code)
	return clientFrame(true, 0, OpClose, append(p, r...))
}
func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

type parseCase struct {
	name   string
	in     []byte
	max    int
	events []event
	err    error
}

func parseCases() []parseCase {
	big := strings.Repeat("x", 65536)
	mid := strings.Repeat("y", 256)
	return []parseCase{
		{
			name:   "rfc6455 5.7 single masked text",
			in:     []byte{0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58},
			events: []event{{kind: "msg", op: OpText, data: "Hello"}},
		},
		{
			name:   "rfc6455 5.7 fragmented text",
			in:     cat(text(false, "Hel"), cont(true, "lo")),
			events: []event{{kind: "msg", op: OpText, data: "Hello"}},
		},
		{
			name: "rfc6455 5.7 ping and pong",
			in:   cat(clientFrame(true, 0, OpPing, []byte("Hello")), clientFrame(true, 0, OpPong, []byte("Hello"))),
			events: []event{
				{kind: "ping", data: "Hello"},
				{kind: "pong", data: "Hello"},
			},
		},
		{
			name:   "rfc6455 5.7 256 bytes binary, 16-bit length",
			in:     clientFrame(true, 0, OpBinary, []byte(mid)),
			events: []event{{kind: "msg", op: OpBinary, data: mid}},
		},
		{
			name:   "rfc6455 5.7 64 KiB binary, 64-bit length",
			in:     clientFrame(true, 0, OpBinary, []byte(big)),
			max:    1 << 20,
			events: []event{{kind: "msg", op: OpBinary, data: big}},
		},
		{
			name: "empty text and empty fragments",
			in:   cat(text(true, ""), text(false, ""), cont(false, ""), cont(true, "")),
			events: []event{
				{kind: "msg", op: OpText},
				{kind: "msg", op: OpText},
			},
		},
		{
			name: "ping between fragments",
			in:   cat(text(false, "ab"), clientFrame(true, 0, OpPing, []byte("p")), cont(true, "cd")),
			events: []event{
				{kind: "ping", data: "p"},
				{kind: "msg", op: OpText, data: "abcd"},
			},
		},
		{
			name:   "utf-8 rune split across fragments",
			in:     cat(text(false, "\xce"), cont(false, "\xba\xe1\xbd"), cont(true, "\xb9\xcf\x83")),
			events: []event{{kind: "msg", op: OpText, data: "κόσ"}},
		},
		{
			name:   "close with code and reason stops parsing",
			in:     cat(closeF(1000, "bye"), text(true, "after")),
			events: []event{{kind: "close", code: 1000, data: "bye"}},
		},
		{
			name:   "close without payload",
			in:     clientFrame(true, 0, OpClose, nil),
			events: []event{{kind: "close", code: CloseNoStatus}},
		},
		{
			name:   "message then reserved bits",
			in:     cat(text(true, "ok"), clientFrame(true, 4, OpText, []byte("x"))),
			events: []event{{kind: "msg", op: OpText, data: "ok"}},
			err:    ErrReservedBits,
		},
		{
			name: "reserved data opcode",
			in:   clientFrame(true, 0, 3, nil),
			err:  ErrReservedOpcode,
		},
		{
			name: "reserved control opcode",
			in:   clientFrame(true, 0, 0xb, nil),
			err:  ErrReservedOpcode,
		},
		{
			name: "unmasked frame",
			in:   []byte{0x81, 0x02, 'h', 'i'},
			err:  ErrUnmasked,
		},
		{
			name: "fragmented ping",
			in:   clientFrame(false, 0, OpPing, nil),
			err:  ErrControlFragmented,
		},
		{
			name: "ping over 125 bytes",
			in:   clientFrame(true, 0, OpPing, []byte(strings.Repeat("p", 126))),
			err:  ErrControlTooLong,
		},
		{
			name: "ping with a 16-bit length encoding of 5",
			in:   []byte{0x89, 0xfe, 0, 5, 1, 2, 3, 4, 'a', 'b', 'c', 'd', 'e'},
			err:  ErrControlTooLong,
		},
		{
			name: "continuation without message",
			in:   cont(true, "x"),
			err:  ErrUnexpectedCont,
		},
		{
			name: "text inside fragmented message",
			in:   cat(text(false, "a"), text(true, "b")),
			err:  ErrExpectedCont,
		},
		{
			name: "invalid utf-8 single frame",
			in:   text(true, "\xce\xba\xff"),
			err:  ErrInvalidUTF8,
		},
		{
			name: "invalid utf-8 in second fragment",
			in:   cat(text(false, "\xce\xba"), cont(false, "\xed\xa0\x80"), cont(true, "ok")),
			err:  ErrInvalidUTF8,
		},
		{
			name: "truncated rune at message end",
			in:   cat(text(false, "ab"), cont(true, "\xe2\x82")),
			err:  ErrInvalidUTF8,
		},
		{
			name:   "binary is not utf-8 checked",
			in:     clientFrame(true, 0, OpBinary, []byte{0xff, 0xfe}),
			events: []event{{kind: "msg", op: OpBinary, data: "\xff\xfe"}},
		},
		{
			name: "single frame over the limit",
			in:   clientFrame(true, 0, OpBinary, []byte(mid)),
			max:  255,
			err:  ErrTooLarge,
		},
		{
			name: "fragments over the limit",
			in:   cat(clientFrame(false, 0, OpBinary, []byte(mid)), cont(true, "z")),
			max:  256,
			err:  ErrTooLarge,
		},
		{
			name: "64-bit length with top bit set",
			in:   []byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4},
			err:  ErrBadLength,
		},
		{
			name: "close payload of one byte",
			in:   clientFrame(true, 0, OpClose, []byte{3}),
			err:  ErrCloseLength,
		},
		{
			name: "close code 1005 may not be sent",
			in:   closeF(1005, ""),
			err:  ErrCloseCode,
		},
		{
			name: "close code 999",
			in:   closeF(999, ""),
			err:  ErrCloseCode,
		},
		{
			name: "close code 5000",
			in:   closeF(5000, ""),
			err:  ErrCloseCode,
		},
		{
			name:   "close code 4999 is the application's",
			in:     closeF(4999, ""),
			events: []event{{kind: "close", code: 4999}},
		},
		{
			name: "close reason invalid utf-8",
			in:   closeF(1000, "\xff"),
			err:  ErrInvalidCloseReason,
		},
	}
}

// maxUnconsumed bounds what Parse may leave unconsumed without an error
// and without a close frame: an incomplete control frame, header (2 bytes
// and the mask) plus at most 125 payload bytes, less the byte still to
// come. An incomplete data frame header is shorter (MaxHeaderSize-1), and
// a data frame's payload is consumed as it arrives.
const maxUnconsumed = 2 + 4 + 125 - 1

// feed passes in to a fresh Parser in the given chunks the way an event
// loop does: unconsumed bytes stay in front of the next chunk. At every
// return of Parse it holds the parser to its resource bounds: no message
// payload and no assembly buffer over max, and no more than maxUnconsumed
// bytes left for the caller to keep.
func feed(t testing.TB, in []byte, chunks []int, max int) ([]event, error) {
	t.Helper()
	var (
		p       Parser
		r       recorder
		pending []byte
		off     int
		seen    int // events already checked
	)
	defer p.Reset()
	for _, size := range chunks {
		pending = append(pending, in[off:off+size]...)
		off += size
		n, err := p.Parse(pending, max, &r)
		if b := p.Buffered(); b > max {
			t.Fatalf("parser buffers %d bytes, max message %d", b, max)
		}
		for _, e := range r.events[seen:] {
			if len(e.data) > max {
				t.Fatalf("%s payload of %d bytes, max message %d", e.kind, len(e.data), max)
			}
		}
		seen = len(r.events)
		if err != nil {
			return r.events, err
		}
		if n > len(pending) {
			t.Fatalf("consumed %d of %d bytes", n, len(pending))
		}
		if len(r.events) > 0 && r.events[len(r.events)-1].kind == "close" {
			return r.events, nil
		}
		if left := len(pending) - n; left > maxUnconsumed {
			t.Fatalf("%d bytes left unconsumed, at most %d may be", left, maxUnconsumed)
		}
		pending = append(pending[:0], pending[n:]...)
	}
	return r.events, nil
}

func TestParse(t *testing.T) {
	for _, tc := range parseCases() {
		t.Run(tc.name, func(t *testing.T) {
			max := tc.max
			if max == 0 {
				max = 64 << 10
			}
			check := func(label string, chunks []int) {
				t.Helper()
				events, err := feed(t, tc.in, chunks, max)
				if !errors.Is(err, tc.err) {
					t.Fatalf(
						"%s: err %v, want %v",
						label, err, tc.err)
				}
				if fmt.Sprint(events) != fmt.Sprint(tc.events) {
					t.Fatalf(
						"%s: events %v, want %v",
						label, events, tc.events)
				}
			}
			check("whole", []int{len(tc.in)})
			// Split at every byte boundary, then one byte at a time.
			for i := 1; i < len(tc.in) && i < 300; i++ {
				check(fmt.Sprintf("split at %d", i), []int{i, len(tc.in) - i})
			}
			if len(tc.in) < 4096 {
				ones := make([]int, len(tc.in))
				for i := range ones {
					ones[i] = 1
				}
				check("byte by byte", ones)
			}
		})
	}
}

// TestUTF8FailFast checks that invalid UTF-8 is reported as soon as the bad
// byte arrives, before the frame or message is complete (Autobahn 6.4.x).
func TestUTF8FailFast(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		{
			name: "bad byte early in one long frame",
			in:   text(true, "\xce\xba\xf4\x90\x80\x80"+strings.Repeat("a", 1000)),
		},
		{
			name: "bad byte in the middle fragment",
			in:   cat(text(false, "\xce\xba"), cont(false, "\xf4\x90"+strings.Repeat("a", 100)), cont(true, "rest")),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Give only the bytes up to and including the first bad one
			// (0x90 after 0xf4), split in two reads.
			cut := bytes.Index(unmaskAll(tc.in), []byte{0xf4, 0x90})
			if cut < 0 {
				t.Fatal("test input has no bad sequence")
			}
			_, err := feed(t, tc.in, []int{cut, 2}, 64<<10)
			if !errors.Is(err, ErrInvalidUTF8) {
				t.Fatalf(
					"err %v after the bad byte arrived, want %v",
					err, ErrInvalidUTF8)
			}
		})
	}
}

// unmaskAll returns in with every payload byte unmasked at its own
// position, so that tests can find payload bytes by value.
func unmaskAll(in []byte) []byte {
	out := append([]byte(nil), in...)
	for i := 0; i < len(out); {
		l := int(out[i+1] & 0x7f)
		h := 2
		switch l {
		case 126:
			l, h = int(binary.BigEndian.Uint16(out[i+2:])), 4
		case 127:
			l, h = int(binary.BigEndian.Uint64(out[i+2:])), 10
		}
		mask := out[i+h : i+h+4]
		for j := 0; j < l; j++ {
			out[i+h+4+j] ^= mask[j&3]
		}
		i += h + 4 + l
	}
	return out
}

func TestUTF8(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{name: "ascii", in: "hello", ok: true},
		{name: "two byte", in: "κόσμε", ok: true},
		{name: "four byte", in: "\xf0\x90\x80\x80", ok: true},
		{name: "max code point", in: "\xf4\x8f\xbf\xbf", ok: true},
		{name: "over max code point", in: "\xf4\x90\x80\x80", ok: false},
		{name: "surrogate", in: "\xed\xa0\x80", ok: false},
		{name: "overlong", in: "\xc0\xaf", ok: false},
		{name: "overlong three", in: "\xe0\x80\xaf", ok: false},
		{name: "lone continuation", in: "\x80", ok: false},
		{name: "truncated", in: "\xe2\x82", ok: false},
		{name: "fe", in: "\xfe", ok: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for i := 0; i <= len(tc.in); i++ {
				for j := i; j <= len(tc.in); j++ {
					var u UTF8
					ok := u.Write([]byte(tc.in[:i])) && u.Write([]byte(tc.in[i:j])) &&
						u.Write([]byte(tc.in[j:])) && u.Complete()
					if ok != tc.ok {
						t.Fatalf(
							"split %d,%d: valid=%v, want %v",
							i, j, ok, tc.ok)
					}
				}
			}
		})
	}
}

func TestAppendHeader(t *testing.T) {
	tests := []struct {
		name   string
		length int
		want   []byte
	}{
		{name: "7-bit", length: 5, want: []byte{0x81, 5}},
		{name: "16-bit", length: 256, want: []byte{0x81, 126, 1, 0}},
		{name: "64-bit", length: 65536, want: []byte{0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := AppendHeader(nil, true, OpText, tc.length)
			if !bytes.Equal(got, tc.want) {
				t.Fatalf(
					"header %x, want %x",
					got, tc.want)
			}
			if HeaderLen(tc.length) != len(got) {
				t.Fatalf(
					"HeaderLen %d, header is %d bytes",
					HeaderLen(tc.length), len(got))
			}
		})
	}
}

func TestAppendClose(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes
	got := AppendClose(nil, CloseGoingAway, long)
	if got[0] != 0x88 || int(got[1]) != len(got)-2 || len(got)-2 > 125 {
		t.Fatalf("close frame header %x for %d bytes", got[:2], len(got))
	}
	code, reason, err := ParseClose(got[2:])
	if err != nil || code != CloseGoingAway || !strings.HasPrefix(long, string(reason)) {
		t.Fatalf("ParseClose = %d %q %v", code, reason, err)
	}
}

func TestParseAllocs(t *testing.T) {
	msg := clientFrame(true, 0, OpText, bytes.Repeat([]byte("a"), 1024))
	frag := cat(text(false, "hello "), cont(true, "world"))
	buf := make([]byte, len(msg))
	var p Parser
	var h nopHandler
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{name: "single frame", in: msg},
		{name: "fragmented", in: frag},
	} {
		allocs := testing.AllocsPerRun(200, func() {
			buf = append(buf[:0], tc.in...)
			if _, err := p.Parse(buf, 64<<10, h); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocs per parse, want 0", tc.name, allocs)
		}
	}
	out := make([]byte, 0, 2048)
	allocs := testing.AllocsPerRun(200, func() {
		out = AppendFrame(out[:0], OpText, msg[:1024])
	})
	if allocs != 0 {
		t.Errorf("AppendFrame: %v allocs, want 0", allocs)
	}
}

type nopHandler struct{}

func (nopHandler) OnMessage(OpCode, []byte) error  { return nil }
func (nopHandler) OnPing([]byte) error             { return nil }
func (nopHandler) OnPong([]byte) error             { return nil }
func (nopHandler) OnClose(CloseCode, []byte) error { return nil }

func TestAppendClientFrameRFC(t *testing.T) {
	// RFC 6455 section 5.7: a single-frame masked text message "Hello".
	want := []byte{0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58}
	got := AppendClientFrame(nil, true, OpText, []byte("Hello"), [4]byte{0x37, 0xfa, 0x21, 0x3d})
	if !bytes.Equal(got, want) {
		t.Fatalf("frame %x, want %x", got, want)
	}
}

func TestParseHeader(t *testing.T) {
	tests := []struct {
		name  string
		in    []byte
		whole bool
		want  Header
	}{
		{
			name:  "one byte",
			in:    []byte{0x81},
			whole: false,
		},
		{
			name:  "server text, 7-bit",
			in:    []byte{0x81, 0x05, 'h'},
			whole: true,
			want:  Header{Fin: true, Op: OpText, Length: 5, Size: 2},
		},
		{
			name:  "partial 16-bit header still reports its first byte",
			in:    []byte{0x42, 0xfe, 0x01},
			whole: false,
			want:  Header{Rsv: 4, Op: OpBinary, Masked: true, Length: 126, Size: 8},
		},
		{
			name:  "masked 16-bit",
			in:    []byte{0x82, 0xfe, 0x01, 0x00, 1, 2, 3, 4},
			whole: true,
			want:  Header{Fin: true, Op: OpBinary, Masked: true, Mask: [4]byte{1, 2, 3, 4}, Length: 256, Size: 8},
		},
		{
			name:  "64-bit with the top bit set",
			in:    []byte{0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 1},
			whole: true,
			want:  Header{Fin: true, Op: OpBinary, Length: -(1 << 63) + 1, Size: 10},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, whole := ParseHeader(tc.in)
			if whole != tc.whole || (len(tc.in) >= 2 && got != tc.want) {
				t.Fatalf("ParseHeader = %+v, %v; want %+v, %v", got, whole, tc.want, tc.whole)
			}
		})
	}
}

func (r *recorder) OnCompressed(op OpCode, p []byte) error {
	r.events = append(r.events, event{kind: "z", op: op, data: string(p)})
	return nil
}
