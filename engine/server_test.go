package engine

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsedge/wsedge/frame"
)

func TestEchoGorilla(t *testing.T) {
	s := startServer(t, nil)
	ws, resp, err := websocket.DefaultDialer.Dial("ws://"+s.Addr()+"/ws", nil)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	defer ws.Close()
	for _, tc := range []struct {
		name string
		typ  int
		data string
	}{
		{name: "text", typ: websocket.TextMessage, data: "hello"},
		{name: "binary", typ: websocket.BinaryMessage, data: "\x00\x01\xff"},
		{name: "empty", typ: websocket.TextMessage, data: ""},
		{name: "64 KiB", typ: websocket.BinaryMessage, data: strings.Repeat("z", 64<<10)},
	} {
		if err := ws.WriteMessage(tc.typ, []byte(tc.data)); err != nil {
			t.Fatal(err)
		}
		typ, got, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if typ != tc.typ || string(got) != tc.data {
			t.Fatalf("%s: echo type %d len %d, want type %d len %d", tc.name, typ, len(got), tc.typ, len(tc.data))
		}
	}
	if err := ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye")); err != nil {
		t.Fatal(err)
	}
	_, _, err = ws.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("after close: %v, want close 1000 echoed", err)
	}
}

// TestHandshakeByteByByte sends the upgrade request one byte per write.
func TestHandshakeByteByByte(t *testing.T) {
	s := startServer(t, nil)
	c := dialRaw(t, s.Addr())
	for _, b := range []byte(upgradeRequest("/ws")) {
		c.send([]byte{b})
	}
	if resp := c.readResponse(); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", resp.StatusCode)
	}
	c.send(masked(true, frame.OpText, []byte("after")))
	c.expectFrame(frame.OpText, "after")
}

// TestHandshakeWithFramesBehind sends the request and two frames in one
// write: the frames must not be swallowed by the upgrade.
func TestHandshakeWithFramesBehind(t *testing.T) {
	s := startServer(t, nil)
	c := dialRaw(t, s.Addr())
	req := []byte(upgradeRequest("/ws"))
	req = append(req, masked(true, frame.OpText, []byte("one"))...)
	req = append(req, masked(true, frame.OpBinary, []byte("two"))...)
	c.send(req)
	if resp := c.readResponse(); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", resp.StatusCode)
	}
	c.expectFrame(frame.OpText, "one")
	c.expectFrame(frame.OpBinary, "two")
}

func TestHandshakeRejections(t *testing.T) {
	s := startServer(t, func(c *Config) { c.AllowedOrigins = []string{"https://ok.example"} })
	key := "Sec-WebSocket-Key: " + testKey + "\r\n"
	tests := []struct {
		name string
		req  string
		code int
	}{
		{
			name: "wrong path",
			req:  upgradeRequest("/nope"),
			code: http.StatusNotFound,
		},
		{
			name: "POST",
			req:  strings.Replace(upgradeRequest("/ws"), "GET", "POST", 1),
			code: http.StatusMethodNotAllowed,
		},
		{
			name: "missing key",
			req:  strings.Replace(upgradeRequest("/ws"), key, "", 1),
			code: http.StatusBadRequest,
		},
		{
			name: "version 12",
			req:  strings.Replace(upgradeRequest("/ws"), "Version: 13", "Version: 12", 1),
			code: http.StatusUpgradeRequired,
		},
		{
			name: "not an upgrade",
			req:  "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n",
			code: http.StatusBadRequest,
		},
		{
			name: "origin not allowed",
			req:  upgradeRequest("/ws", "Origin: https://evil.example"),
			code: http.StatusForbidden,
		},
		{
			name: "header over 8 KiB",
			req:  upgradeRequest("/ws", "X-Pad: "+strings.Repeat("a", 9000)),
			code: http.StatusRequestHeaderFieldsTooLarge,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, s.Addr())
			c.send([]byte(tc.req))
			if resp := c.readResponse(); resp.StatusCode != tc.code {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.code)
			}
			c.expectEOF()
		})
	}
	t.Run("allowed origin", func(t *testing.T) {
		c := dialRaw(t, s.Addr())
		c.send([]byte(upgradeRequest("/ws", "Origin: https://ok.example")))
		if resp := c.readResponse(); resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
}

func TestHandshakeTimeout(t *testing.T) {
	s := startServer(t, func(c *Config) { c.HandshakeTimeout = 200 * time.Millisecond })
	c := dialRaw(t, s.Addr())
	c.send([]byte("GET /ws HTTP/1.1\r\n")) // and then nothing: slowloris
	start := time.Now()
	c.expectEOF()
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("closed after %v, deadline 200ms", d)
	}
	checkFor(t, 2*time.Second, func() error {
		s.metricsFlushed()
		if s.m.HandshakeTimeout.Get() != 1 {
			return errf("handshake timeouts = %d", s.m.HandshakeTimeout.Get())
		}
		return nil
	})
}

func TestProtocolErrorsClose(t *testing.T) {
	s := startServer(t, func(c *Config) { c.MaxMessage = 1000 })
	tests := []struct {
		name string
		in   []byte
		code frame.CloseCode
	}{
		{
			name: "reserved bits",
			in:   append([]byte{0xc1, 0x80}, 1, 2, 3, 4),
			code: frame.CloseProtocolError,
		},
		{
			name: "unmasked",
			in:   []byte{0x81, 0x00},
			code: frame.CloseProtocolError,
		},
		{
			name: "invalid utf-8",
			in:   masked(true, frame.OpText, []byte{0xff}),
			code: frame.CloseInvalidPayload,
		},
		{
			name: "too large",
			in:   masked(true, frame.OpBinary, make([]byte, 1001)),
			code: frame.CloseTooLarge,
		},
		{
			name: "bad close code",
			in:   closeFrame(1005, ""),
			code: frame.CloseProtocolError,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := handshake(t, s.Addr())
			c.send(tc.in)
			c.expectClose(tc.code)
		})
	}
}

func TestClientClose(t *testing.T) {
	s := startServer(t, nil)
	c := handshake(t, s.Addr())
	c.send(closeFrame(4001, "done"))
	if reason := c.expectClose(4001); reason != "" {
		t.Fatalf("reason %q", reason)
	}
	c = handshake(t, s.Addr())
	c.send(masked(true, frame.OpClose, nil))
	c.expectClose(frame.CloseNormal)
}

func TestPingAndIdleTimeout(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.PingInterval = time.Second
		c.IdleTimeout = 2 * time.Second
	})
	// A client that answers pings stays; one that does not is closed.
	c := handshake(t, s.Addr())
	start := time.Now()
	c.expectFrame(frame.OpPing, "")
	if d := time.Since(start); d < 800*time.Millisecond {
		t.Fatalf("ping after %v, interval 1s", d)
	}
	c.expectClose(closeNoPong) // 4008, not 1001: a dead network is not a shutdown
	if d := time.Since(start); d < 1800*time.Millisecond || d > 4*time.Second {
		t.Fatalf("idle close after %v, timeout 2s", d)
	}

	alive := handshake(t, s.Addr())
	for range 3 {
		alive.expectFrame(frame.OpPing, "")
		alive.send(masked(true, frame.OpPong, nil))
	}
	alive.send(masked(true, frame.OpText, []byte("still here")))
	alive.expectFrame(frame.OpText, "still here")
}

func TestPingEcho(t *testing.T) {
	s := startServer(t, nil)
	c := handshake(t, s.Addr())
	c.send(masked(true, frame.OpPing, []byte("are you there")))
	c.expectFrame(frame.OpPong, "are you there")
	// A ping between the fragments of a message.
	c.send(masked(false, frame.OpText, []byte("frag")))
	c.send(masked(true, frame.OpPing, []byte("p")))
	c.send(masked(true, frame.OpContinuation, []byte("ment")))
	c.expectFrame(frame.OpPong, "p")
	c.expectFrame(frame.OpText, "fragment")
}
