package engine

import (
	"strings"
	"testing"

	"github.com/wsedge/wsedge/frame"
)

// TestConformance mirrors the behaviours the Autobahn fuzzingclient checks
// in sections 1–7, 9 and 10 (there are no 8.* or 11.* cases), against the
// echo server. Every case runs with its bytes written whole and written one
// octet at a time. The real suite is run with ../shared/autobahn (see
// docs/DESIGN.md, "Conformance").
func TestConformance(t *testing.T) {
	s := startServer(t, func(c *Config) { c.MaxMessage = 1 << 20 })
	type reply struct {
		op   frame.OpCode
		data string
	}
	ping := func(p string) []byte { return masked(true, frame.OpPing, []byte(p)) }
	txt := func(fin bool, p string) []byte { return masked(fin, frame.OpText, []byte(p)) }
	bin := func(p string) []byte { return masked(true, frame.OpBinary, []byte(p)) }
	cont := func(fin bool, p string) []byte { return masked(fin, frame.OpContinuation, []byte(p)) }
	withRsv := func(b []byte, rsv byte) []byte { b[0] |= rsv << 4; return b }
	withOp := func(op byte, p string) []byte { return masked(true, frame.OpCode(op), []byte(p)) }
	big := strings.Repeat("*", 65535)
	huge := strings.Repeat("#", 1<<20)
	valid := "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5" // κόσμε

	tests := []struct {
		name  string
		send  [][]byte
		want  []reply
		close frame.CloseCode // 0: the connection must stay open
		slow  bool            // skip the octet-wise run
	}{
		// 1.*: framing
		{name: "1.1.1 empty text", send: [][]byte{txt(true, "")}, want: []reply{{frame.OpText, ""}}},
		{name: "1.1.2 125 bytes", send: [][]byte{txt(true, big[:125])}, want: []reply{{frame.OpText, big[:125]}}},
		{name: "1.1.3 126 bytes", send: [][]byte{txt(true, big[:126])}, want: []reply{{frame.OpText, big[:126]}}},
		{name: "1.1.4 127 bytes", send: [][]byte{txt(true, big[:127])}, want: []reply{{frame.OpText, big[:127]}}},
		{name: "1.1.6 65535 bytes", send: [][]byte{txt(true, big)}, want: []reply{{frame.OpText, big}}, slow: true},
		{name: "1.2.1 empty binary", send: [][]byte{bin("")}, want: []reply{{frame.OpBinary, ""}}},
		{name: "1.2.8 binary 65535", send: [][]byte{bin(big)}, want: []reply{{frame.OpBinary, big}}, slow: true},
		// 2.*: pings and pongs
		{name: "2.1 ping", send: [][]byte{ping("")}, want: []reply{{frame.OpPong, ""}}},
		{name: "2.3 ping binary payload", send: [][]byte{ping("\x00\xff\xfe")}, want: []reply{{frame.OpPong, "\x00\xff\xfe"}}},
		{name: "2.4 ping 125", send: [][]byte{ping(big[:125])}, want: []reply{{frame.OpPong, big[:125]}}},
		{name: "2.5 ping 126", send: [][]byte{ping(big[:126])}, close: frame.CloseProtocolError},
		{name: "2.7 unsolicited pong", send: [][]byte{masked(true, frame.OpPong, nil), txt(true, "x")}, want: []reply{{frame.OpText, "x"}}},
		{name: "2.10 ten pings", send: bytes10(ping("p")), want: repeat(reply{frame.OpPong, "p"}, 10)},
		// 3.*: reserved bits
		{name: "3.1 rsv1", send: [][]byte{withRsv(txt(true, "x"), 4)}, close: frame.CloseProtocolError},
		{name: "3.2 rsv2 after message", send: [][]byte{txt(true, "ok"), withRsv(txt(true, "x"), 2), ping("")}, want: []reply{{frame.OpText, "ok"}}, close: frame.CloseProtocolError},
		{name: "3.7 rsv on close", send: [][]byte{withRsv(closeFrame(1000, ""), 7)}, close: frame.CloseProtocolError},
		// 4.*: opcodes
		{name: "4.1.1 opcode 3", send: [][]byte{withOp(3, "")}, close: frame.CloseProtocolError},
		{name: "4.1.5 opcode 7 after message", send: [][]byte{txt(true, "ok"), withOp(7, "x"), ping("")}, want: []reply{{frame.OpText, "ok"}}, close: frame.CloseProtocolError},
		{name: "4.2.1 opcode 11", send: [][]byte{withOp(11, "")}, close: frame.CloseProtocolError},
		{name: "4.2.5 opcode 15", send: [][]byte{withOp(15, "x")}, close: frame.CloseProtocolError},
		// 5.*: fragmentation
		{name: "5.1 fragmented ping", send: [][]byte{masked(false, frame.OpPing, []byte("a")), cont(true, "b")}, close: frame.CloseProtocolError},
		{name: "5.3 two fragments", send: [][]byte{txt(false, "frag"), cont(true, "ment")}, want: []reply{{frame.OpText, "fragment"}}},
		{name: "5.6 ping between fragments", send: [][]byte{txt(false, "a"), ping("p"), cont(true, "b")}, want: []reply{{frame.OpPong, "p"}, {frame.OpText, "ab"}}},
		{name: "5.9 continuation first", send: [][]byte{cont(true, "x"), txt(true, "y")}, close: frame.CloseProtocolError},
		{name: "5.15 text inside fragments", send: [][]byte{txt(false, "a"), cont(false, "b"), txt(false, "c")}, close: frame.CloseProtocolError},
		{name: "5.19 pings between many fragments", send: [][]byte{txt(false, "1"), cont(false, "2"), ping("a"), cont(false, "3"), ping("b"), cont(true, "4")}, want: []reply{{frame.OpPong, "a"}, {frame.OpPong, "b"}, {frame.OpText, "1234"}}},
		// 6.*: UTF-8
		{name: "6.2.1 valid utf-8", send: [][]byte{txt(true, valid)}, want: []reply{{frame.OpText, valid}}},
		{name: "6.2.3 valid utf-8 split in runes", send: [][]byte{txt(false, valid[:1]), cont(false, valid[1:4]), cont(true, valid[4:])}, want: []reply{{frame.OpText, valid}}},
		{name: "6.3.1 invalid utf-8", send: [][]byte{txt(true, valid+"\xed\xa0\x80edited")}, close: frame.CloseInvalidPayload},
		{name: "6.4.1 invalid in middle fragment", send: [][]byte{txt(false, valid), cont(false, "\xf4\x90\x80\x80"), cont(true, "edited")}, close: frame.CloseInvalidPayload},
		{name: "6.6 truncated at end", send: [][]byte{txt(true, "\xce")}, close: frame.CloseInvalidPayload},
		// 7.*: close handling
		{name: "7.1.1 close after message", send: [][]byte{txt(true, "x"), closeFrame(1000, "")}, want: []reply{{frame.OpText, "x"}}, close: frame.CloseNormal},
		{name: "7.1.3 data after close ignored", send: [][]byte{closeFrame(1000, ""), txt(true, "late")}, close: frame.CloseNormal, slow: true}, // octet-wise, the late bytes race the server closing TCP
		{name: "7.3.1 close empty", send: [][]byte{masked(true, frame.OpClose, nil)}, close: frame.CloseNormal},
		{name: "7.3.2 close 1 byte", send: [][]byte{masked(true, frame.OpClose, []byte{1})}, close: frame.CloseProtocolError},
		{name: "7.3.6 close reason 123 bytes", send: [][]byte{closeFrame(1000, big[:123])}, close: frame.CloseNormal},
		{name: "7.5.1 close reason invalid utf-8", send: [][]byte{closeFrame(1000, "\xce\xba\xff")}, close: frame.CloseInvalidPayload},
		{name: "7.7.1 close 1000", send: [][]byte{closeFrame(1000, "")}, close: 1000},
		{name: "7.7.8 close 1011", send: [][]byte{closeFrame(1011, "")}, close: 1011},
		{name: "7.7.10 close 3000", send: [][]byte{closeFrame(3000, "")}, close: 3000},
		{name: "7.9.1 close code 0", send: [][]byte{closeFrame(0, "")}, close: frame.CloseProtocolError},
		{name: "7.9.3 close code 1004", send: [][]byte{closeFrame(1004, "")}, close: frame.CloseProtocolError},
		{name: "7.9.6 close code 1006", send: [][]byte{closeFrame(1006, "")}, close: frame.CloseProtocolError},
		{name: "7.9.9 close code 2999", send: [][]byte{closeFrame(2999, "")}, close: frame.CloseProtocolError},
		{name: "7.13.2 close code 65535", send: [][]byte{closeFrame(65535, "")}, close: frame.CloseProtocolError},
		// 9.*: limits and large messages
		{name: "9.1.3 1 MiB text", send: [][]byte{txt(true, huge)}, want: []reply{{frame.OpText, huge}}, slow: true},
		{name: "9.2.x 1 MiB binary in 64 KiB fragments", send: fragments(huge, 64<<10), want: []reply{{frame.OpBinary, huge}}, slow: true},
		{name: "over the limit", send: [][]byte{bin(huge + "!")}, close: frame.CloseTooLarge, slow: true},
		// 10.*: auto-fragmentation is the server's choice; messages echo whole
		{name: "10.1.1 fragmented 64 KiB text", send: textFragments(big, 1300), want: []reply{{frame.OpText, big}}, slow: true},
	}
	for _, tc := range tests {
		for _, octets := range []bool{false, true} {
			if octets && tc.slow {
				continue
			}
			name := tc.name
			if octets {
				name += " octet-wise"
			}
			t.Run(name, func(t *testing.T) {
				c := handshake(t, s.Addr())
				for _, b := range tc.send {
					if !octets {
						c.send(b)
						continue
					}
					for i := range b {
						c.send(b[i : i+1])
					}
				}
				for _, w := range tc.want {
					c.expectFrame(w.op, w.data)
				}
				if tc.close != 0 {
					c.expectClose(tc.close)
					return
				}
				c.send(txt(true, "still open"))
				c.expectFrame(frame.OpText, "still open")
			})
		}
	}
}

func bytes10(b []byte) [][]byte {
	out := make([][]byte, 10)
	for i := range out {
		out[i] = b
	}
	return out
}

func repeat[T any](v T, n int) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func fragments(s string, size int) [][]byte { return split(frame.OpBinary, s, size) }

func textFragments(s string, size int) [][]byte { return split(frame.OpText, s, size) }

func split(op frame.OpCode, s string, size int) [][]byte {
	var out [][]byte
	for i := 0; i < len(s); i += size {
		end := min(i+size, len(s))
		o := frame.OpContinuation
		if i == 0 {
			o = op
		}
		out = append(out, masked(end == len(s), o, []byte(s[i:end])))
	}
	return out
}
