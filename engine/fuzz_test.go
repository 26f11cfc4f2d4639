package engine

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsedge/wsedge/frame"
)

// handshakeOutcome is where a connection ended up after its input.
type handshakeOutcome struct {
	out    []byte
	action gnet.Action
	state  connState // stateHandshake: no upgrade (yet); stateOpen: upgraded
	broken bool      // a protocol error made the rest of the input unreadable
}

// FuzzHandshake feeds arbitrary bytes as an upgrade request and the frames
// behind it, whole and in chunks whose size comes from the input. It must
// never panic and must answer with an HTTP status line or nothing. However
// the bytes were split, the connection must end in the same place: the
// same bytes written (the response and every frame after it, since the
// parser's events do not depend on the split), the same action (gnet.Close
// or None), whether the upgrade succeeded, and whether a protocol error
// left it closing.
func FuzzHandshake(f *testing.F) {
	req := []byte(upgradeRequest("/ws"))
	withFrames := func(frames ...[]byte) []byte {
		return append(append([]byte{}, req...), bytes.Join(frames, nil)...)
	}
	overflow := append([]byte{0x80, 0xff}, binary.BigEndian.AppendUint64(nil, math.MaxInt64)...)
	overflow = append(overflow, 1, 2, 3, 4)
	f.Add(byte(1), req)
	f.Add(byte(7), []byte(upgradeRequest("/ws", "Origin: https://x", "Sec-WebSocket-Protocol: wsedge.v1.json")))
	f.Add(byte(3), []byte("GET /ws HTTP/1.0\r\n\r\n"))
	f.Add(byte(2), []byte("POST /ws HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Add(byte(5), withFrames([]byte{0x81, 0x81, 1, 2, 3, 4, 'a'}))
	f.Add(byte(9), []byte("GET /ws?token=abc HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n\r\n"))
	f.Add(byte(4), withFrames(masked(false, frame.OpText, []byte("a")), overflow, bytes.Repeat([]byte("a"), 300)))
	f.Add(byte(6), withFrames([]byte{0x82, 0xfe, 0, 5, 1, 2, 3, 4}, []byte("hello")))
	f.Add(byte(11), withFrames(masked(false, frame.OpText, []byte("\xce")), masked(true, frame.OpPing, []byte("p")),
		masked(true, frame.OpContinuation, []byte("\xba!"))))
	f.Add(byte(8), withFrames(masked(true, frame.OpText, []byte("x")), closeFrame(frame.CloseNormal, "bye"), masked(true, frame.OpText, []byte("late"))))
	f.Add(byte(10), withFrames(masked(true, frame.OpBinary, []byte("ok")), masked(true, frame.OpText, []byte("\xff"))))
	s, _ := newFakeServer(f, nil)
	run := func(in []byte, step int) (o handshakeOutcome) {
		fc := &fakeConn{}
		if _, act := s.OnOpen(fc); act != gnet.None {
			f.Fatalf("OnOpen: %v", act)
		}
		defer s.OnClose(fc, nil)
		for off := 0; off < len(in) && o.action == gnet.None; off += step {
			fc.in = append(fc.in, in[off:min(off+step, len(in))]...)
			o.action = s.OnTraffic(fc)
		}
		c := fc.ctx.(*conn)
		o.out, o.state, o.broken = fc.out.Bytes(), c.state, c.broken
		return o
	}
	f.Fuzz(func(t *testing.T, step byte, in []byte) {
		if len(in) > 3*maxRequestHeader {
			return
		}
		whole := run(in, len(in)+1)
		split := run(in, int(step%32)+1)
		if len(whole.out) > 0 && !bytes.HasPrefix(whole.out, []byte("HTTP/1.1 ")) {
			t.Fatalf("response does not start with a status line: %q", whole.out)
		}
		if !bytes.Equal(whole.out, split.out) || whole.action != split.action ||
			whole.state != split.state || whole.broken != split.broken {
			t.Fatalf("whole: %v %d broken=%v %q\nsplit: %v %d broken=%v %q",
				whole.action, whole.state, whole.broken, whole.out,
				split.action, split.state, split.broken, split.out)
		}
	})
}
