package engine

import (
	"bytes"
	"testing"

	"github.com/panjf2000/gnet/v2"
)

// FuzzHandshake feeds arbitrary bytes as an upgrade request, whole and in
// chunks whose size comes from the input. It must never panic, must answer
// with an HTTP status line or nothing, and must give the same answer however
// the bytes were split.
func FuzzHandshake(f *testing.F) {
	f.Add(byte(1), []byte(upgradeRequest("/ws")))
	f.Add(byte(7), []byte(upgradeRequest("/ws", "Origin: https://x", "Sec-WebSocket-Protocol: wsedge.v1.json")))
	f.Add(byte(3), []byte("GET /ws HTTP/1.0\r\n\r\n"))
	f.Add(byte(2), []byte("POST /ws HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Add(byte(5), append([]byte(upgradeRequest("/ws")), 0x81, 0x81, 1, 2, 3, 4, 'a'))
	f.Add(byte(9), []byte("GET /ws?token=abc HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n\r\n"))
	s, _ := newFakeServer(f, nil)
	run := func(in []byte, step int) (out []byte, action gnet.Action) {
		fc := &fakeConn{}
		if _, act := s.OnOpen(fc); act != gnet.None {
			f.Fatalf("OnOpen: %v", act)
		}
		defer s.OnClose(fc, nil)
		for off := 0; off < len(in) && action == gnet.None; off += step {
			fc.in = append(fc.in, in[off:min(off+step, len(in))]...)
			action = s.OnTraffic(fc)
		}
		return fc.out.Bytes(), action
	}
	f.Fuzz(func(t *testing.T, step byte, in []byte) {
		if len(in) > 3*maxRequestHeader {
			return
		}
		whole, wact := run(in, len(in)+1)
		split, sact := run(in, int(step%32)+1)
		if len(whole) > 0 && !bytes.HasPrefix(whole, []byte("HTTP/1.1 ")) {
			t.Fatalf("response does not start with a status line: %q", whole)
		}
		// Responses agree up to the end of the HTTP response (frames after
		// it depend on how much arrived).
		end := bytes.Index(whole, []byte("\r\n\r\n"))
		if end >= 0 && !bytes.HasPrefix(split, whole[:end]) {
			t.Fatalf("whole: %q (action %v)\nsplit: %q (action %v)", whole, wact, split, sact)
		}
	})
}
