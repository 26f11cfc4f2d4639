package bench

import (
	"bytes"
	"strings"
	"testing"
)

func TestAcceptRFCExample(t *testing.T) {
	// RFC 6455 section 1.3.
	got := acceptFor([]byte("dGhlIHNhbXBsZSBub25jZQ=="))
	if string(got) != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("accept = %s", got)
	}
}

func TestParseUpgradeResponse(t *testing.T) {
	key := []byte("dGhlIHNhbXBsZSBub25jZQ==")
	good := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
	refused := "HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\n\r\n"
	wrong := "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: nope\r\n\r\n"
	for _, tc := range []struct {
		name   string
		in     string
		n      int
		status int
		ok     bool
	}{
		{"complete", good + "\x82\x00", len(good), 101, true},
		{"incomplete", good[:len(good)-2], 0, 0, false},
		{"refused", refused + "body", len(refused), 401, false},
		{"wrong accept", wrong, len(wrong), 101, false},
		{"no accept", "HTTP/1.1 101 Switching Protocols\r\n\r\n", 36, 101, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, status, ok := parseUpgradeResponse([]byte(tc.in), key)
			if n != tc.n || status != tc.status || ok != tc.ok {
				t.Fatalf("got (%d, %d, %v), want (%d, %d, %v)", n, status, ok, tc.n, tc.status, tc.ok)
			}
		})
	}
}

func TestFrameRoundTrip(t *testing.T) {
	rng := uint64(42)
	for _, size := range []int{0, 1, 125, 126, 65535, 65536, 70000} {
		payload := bytes.Repeat([]byte{0xab}, size)
		f := appendFrame(nil, opBinary, payload, &rng)
		h, ok := parseFrameHeader(f)
		if !ok || !h.fin || h.op != opBinary || !h.masked || h.length != size || len(f) != h.hdrSize+size {
			t.Fatalf("size %d: header %+v ok=%v len=%d", size, h, ok, len(f))
		}
		got := f[h.hdrSize:]
		maskBytes(got, h.key)
		if !bytes.Equal(got, payload) {
			t.Fatalf("size %d: payload differs after unmasking", size)
		}
		if _, ok := parseFrameHeader(f[:h.hdrSize-1]); ok {
			t.Fatalf("size %d: short header parsed", size)
		}
	}
}

func TestJSONInt(t *testing.T) {
	msg := []byte(`{"channel":"bench:b1","offset":21,"data":{"t":1700000000123,"s":-7,"p":"xx"}}`)
	for _, tc := range []struct {
		key  []byte
		want int64
		ok   bool
	}{{keyOffset, 21, true}, {keyT, 1700000000123, true}, {keyS, -7, true}, {keyID, 0, false}} {
		got, ok := jsonInt(msg, tc.key)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: got %d %v, want %d %v", tc.key, got, ok, tc.want, tc.ok)
		}
	}
}

func TestUpgradeRequest(t *testing.T) {
	key := []byte("dGhlIHNhbXBsZSBub25jZQ==")
	tok := []byte("eyJ.eyJ.sig")
	req := func(path, sub string, tok []byte, in string) string {
		return string(appendUpgradeRequest(nil, "127.0.0.1:8080", path, key, sub, tok, in))
	}
	for _, tc := range []struct {
		name string
		req  string
		want []string
		not  []string
	}{
		{"plain", req("/ws", "", nil, TokenInHeader),
			[]string{"GET /ws HTTP/1.1\r\n", "Host: 127.0.0.1:8080\r\n", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "Sec-WebSocket-Version: 13\r\n"},
			[]string{"Authorization", "Sec-WebSocket-Protocol", "token"}},
		{"header", req("/ws?x=1", Subprotocol, tok, TokenInHeader),
			[]string{"GET /ws?x=1 HTTP/1.1\r\n", "Authorization: Bearer eyJ.eyJ.sig\r\n", "Sec-WebSocket-Protocol: wsedge.v1.json\r\n"},
			[]string{"token="}},
		{"header by default", req("/ws", "", tok, ""), []string{"Authorization: Bearer eyJ.eyJ.sig\r\n"}, nil},
		{"query", req("/ws", Subprotocol, tok, TokenInQuery), []string{"GET /ws?token=eyJ.eyJ.sig HTTP/1.1\r\n"},
			[]string{"Authorization", "token."}},
		{"query after another", req("/ws?x=1", "", tok, TokenInQuery), []string{"GET /ws?x=1&token=eyJ.eyJ.sig HTTP/1.1\r\n"}, nil},
		{"subprotocol", req("/ws", Subprotocol, tok, TokenInSubprotocol),
			[]string{"Sec-WebSocket-Protocol: wsedge.v1.json, token.eyJ.eyJ.sig\r\n"}, []string{"Authorization", "token="}},
		{"subprotocol alone", req("/ws", "", tok, TokenInSubprotocol), []string{"Sec-WebSocket-Protocol: token.eyJ.eyJ.sig\r\n"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.HasSuffix(tc.req, "\r\n\r\n") || strings.Count(tc.req, "\r\n\r\n") != 1 {
				t.Fatalf("request not terminated once:\n%q", tc.req)
			}
			for _, w := range tc.want {
				if !strings.Contains(tc.req, w) {
					t.Errorf("request lacks %q:\n%s", w, tc.req)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(tc.req, n) {
					t.Errorf("request has %q:\n%s", n, tc.req)
				}
			}
		})
	}
}

func TestHotPathAllocs(t *testing.T) {
	rng := uint64(7)
	payload := bytes.Repeat([]byte{'x'}, 1024)
	buf := make([]byte, 0, 2048)
	push := []byte(`{"channel":"bench:b1","offset":21,"data":{"t":1700000000123456789,"s":42,"p":"xx"}}`)
	h := newHist()
	allocs := testing.AllocsPerRun(100, func() {
		f := appendFrame(buf[:0], opBinary, payload, &rng)
		hd, _ := parseFrameHeader(f)
		maskBytes(f[hd.hdrSize:], hd.key)
		v, ok1 := jsonInt(push, keyT)
		s, ok2 := jsonInt(push, keyS)
		if !ok1 || !ok2 || v != 1700000000123456789 || s != 42 {
			t.Fatalf("parsed t=%d s=%d", v, s)
		}
		record(h, v%1000000+s)
	})
	if allocs != 0 {
		t.Fatalf("client hot path allocates %.1f times per message", allocs)
	}
	// Connect mode writes an upgrade request per handshake, with a token
	// from the arena, into the loop's buffer.
	key := make([]byte, 24)
	tok := bytes.Repeat([]byte{'t'}, 300)
	buf = make([]byte, 0, 1024)
	for _, in := range []string{TokenInHeader, TokenInQuery, TokenInSubprotocol} {
		allocs = testing.AllocsPerRun(100, func() {
			newKey(key, &rng)
			buf = appendUpgradeRequest(buf[:0], "127.0.0.1:8080", "/ws", key, Subprotocol, tok, in)
		})
		if allocs != 0 {
			t.Fatalf("upgrade request with the token in the %s allocates %.1f times", in, allocs)
		}
	}
}

func TestJSONIntEdges(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{{`"t": 12,`, 12, true}, {`"t":-3}`, -3, true}, {`"t":"x"`, 0, false}, {`"t":`, 0, false},
		{`"t":-`, 0, false}, {`"t":1234567890123456789012`, 0, false},
		{`"t":9223372036854775807}`, 9223372036854775807, true}, {`"t":9223372036854775808}`, 0, false}} {
		got, ok := jsonInt([]byte(tc.in), keyT)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: got %d %v, want %d %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
