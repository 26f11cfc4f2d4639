package engine

import (
	"bytes"
	stdflate "compress/flate"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/panjf2000/gnet/v2"

	"github.com/wsedge/wsedge/broker"
	"github.com/wsedge/wsedge/frame"
	"github.com/wsedge/wsedge/shard"
)

const offerDeflate = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"

// srvFrame is one frame the server wrote.
type srvFrame struct {
	rsv1    bool
	fin     bool
	op      frame.OpCode
	payload []byte
}

// serverFrames splits what the server wrote into frames.
func serverFrames(t testing.TB, b []byte) []srvFrame {
	t.Helper()
	var out []srvFrame
	for len(b) > 0 {
		h, whole := frame.ParseHeader(b)
		if !whole || h.Masked || int64(len(b)-h.Size) < h.Length {
			t.Fatalf("truncated or masked server frame: % x", b[:min(len(b), 16)])
		}
		out = append(out, srvFrame{h.Rsv&4 != 0, h.Fin, h.Op, b[h.Size : h.Size+int(h.Length)]})
		b = b[h.Size+int(h.Length):]
	}
	return out
}

// inflate decodes a server's compressed payload with the standard library.
func inflate(t testing.TB, z []byte) []byte {
	t.Helper()
	r := stdflate.NewReader(io.MultiReader(bytes.NewReader(z), strings.NewReader("\x00\x00\xff\xff\x01\x00\x00\xff\xff")))
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("inflating the server's message: %v", err)
	}
	return out
}

// compressedFrame is a masked client frame carrying msg compressed (RSV1).
func compressedFrame(fin bool, op frame.OpCode, z []byte) []byte {
	b := masked(fin, op, z)
	b[0] |= 0x40
	return b
}

func clientDeflate(msg []byte) []byte {
	d, err := frame.NewDeflater(6, 15)
	if err != nil {
		panic(err)
	}
	return d.Append(nil, msg)
}

// TestDeflateNegotiation: the extension response for the offers clients
// send, RFC 7692's decline rules, and --compression off.
func TestDeflateNegotiation(t *testing.T) {
	const accepted = "Sec-WebSocket-Extensions: permessage-deflate;server_no_context_takeover;client_no_context_takeover"
	for _, tc := range []struct {
		name, offer, want, compression string
	}{
		{"browser", "permessage-deflate; client_max_window_bits", accepted + "\r\n", "on"},
		{"gorilla", "permessage-deflate; server_no_context_takeover; client_no_context_takeover", accepted + "\r\n", "on"},
		{"window", "permessage-deflate; server_max_window_bits=10", accepted + ";server_max_window_bits=10\r\n", "on"},
		{"first invalid, second taken", "permessage-deflate; server_max_window_bits=20, permessage-deflate; client_no_context_takeover", accepted + "\r\n", "on"},
		{"two valid, first taken", "permessage-deflate; server_max_window_bits=9, permessage-deflate", accepted + ";server_max_window_bits=9\r\n", "on"},
		{"unknown parameter", "permessage-deflate; foo=1", "", "on"},
		{"other extension", "x-webkit-deflate-frame", "", "on"},
		{"off", "permessage-deflate; client_max_window_bits", "", "off"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newFakeServer(t, func(c *Config) { c.Compression = tc.compression })
			fc := &fakeConn{}
			s.OnOpen(fc)
			fc.in = []byte(upgradeRequest("/ws", "Sec-WebSocket-Extensions: "+tc.offer))
			if act := s.OnTraffic(fc); act != gnet.None {
				t.Fatalf("action %v: %q", act, fc.out.String())
			}
			resp := fc.out.String()
			if !strings.HasPrefix(resp, "HTTP/1.1 101 ") {
				t.Fatalf("response %q", resp)
			}
			got := ""
			if i := strings.Index(resp, "Sec-WebSocket-Extensions:"); i >= 0 {
				got = resp[i : i+strings.Index(resp[i:], "\n")+1]
			}
			if got != tc.want {
				t.Fatalf("extension header %q, want %q", got, tc.want)
			}
			bits := 0
			if tc.want != "" {
				bits = 15
				if strings.Contains(tc.want, "bits=") {
					fmt.Sscanf(tc.want[strings.Index(tc.want, "bits=")+5:], "%d", &bits)
				}
			}
			if c := fc.ctx.(*conn); c.parser.DeflateBits() != bits {
				t.Fatalf("connection's window bits %d, want %d", c.parser.DeflateBits(), bits)
			}
		})
	}
}

// TestDeflateEcho drives the echo path of a connection that negotiated
// compression: compressed messages (whole and fragmented) are inflated and
// echoed compressed; short and incompressible ones go out plain; a
// compressed control frame is 1002, a bomb 1009 and bad data 1007.
func TestDeflateEcho(t *testing.T) {
	s, _ := newFakeServer(t, nil)
	fc := openFake(t, s, offerDeflate)
	chat := bytes.Repeat([]byte(`{"channel":"chat:room42","data":{"text":"hello"}}`), 20)
	noise := make([]byte, 4000)
	for i := range noise {
		noise[i] = byte(rand.Uint32())
	}
	z := clientDeflate(chat)
	for _, tc := range []struct {
		name  string
		in    []byte
		op    frame.OpCode
		want  []byte
		rsv1  bool
		count int
	}{
		{"compressed in, compressed out", compressedFrame(true, frame.OpText, z), frame.OpText, chat, true, 1},
		{"binary", compressedFrame(true, frame.OpBinary, z), frame.OpBinary, chat, true, 1},
		{"fragmented", append(append(compressedFrame(false, frame.OpText, z[:10]), masked(false, frame.OpContinuation, z[10:20])...), masked(true, frame.OpContinuation, z[20:])...), frame.OpText, chat, true, 1},
		{"plain in, compressed out", masked(true, frame.OpText, chat), frame.OpText, chat, true, 1},
		{"under the minimum size", compressedFrame(true, frame.OpText, clientDeflate([]byte("short"))), frame.OpText, []byte("short"), false, 1},
		{"incompressible", compressedFrame(true, frame.OpBinary, clientDeflate(noise)), frame.OpBinary, noise, false, 1},
	} {
		fc.in = tc.in
		if act := s.OnTraffic(fc); act != gnet.None {
			t.Fatalf("%s: action %v", tc.name, act)
		}
		fs := serverFrames(t, fc.out.Bytes())
		fc.out.Reset()
		if len(fs) != tc.count || fs[0].op != tc.op || fs[0].rsv1 != tc.rsv1 || !fs[0].fin {
			t.Fatalf("%s: frames %+v", tc.name, fs)
		}
		got := fs[0].payload
		if tc.rsv1 {
			if len(got) >= len(tc.want) {
				t.Fatalf("%s: %d compressed bytes for %d", tc.name, len(got), len(tc.want))
			}
			got = inflate(t, got)
		}
		if !bytes.Equal(got, tc.want) {
			t.Fatalf("%s: echoed %q", tc.name, got)
		}
	}

	bombZ := func() []byte {
		d, _ := frame.NewDeflater(9, 15)
		return d.Append(nil, make([]byte, 1<<20)) // 1 MiB of zeros in about 1 KiB
	}()
	if len(bombZ) > 1100 {
		t.Fatalf("bomb of %d bytes", len(bombZ))
	}
	for _, tc := range []struct {
		name string
		in   []byte
		code frame.CloseCode
	}{
		{"compressed ping", compressedFrame(true, frame.OpPing, nil), frame.CloseProtocolError},
		{"compressed continuation", append(compressedFrame(false, frame.OpText, z[:10]), compressedFrame(true, frame.OpContinuation, z[10:])...), frame.CloseProtocolError},
		{"RSV2", func() []byte { b := masked(true, frame.OpText, z); b[0] |= 0x20; return b }(), frame.CloseProtocolError},
		{"bomb", compressedFrame(true, frame.OpBinary, bombZ), frame.CloseTooLarge},
		{"bad data", compressedFrame(true, frame.OpBinary, []byte{0xff, 0xff, 0xff}), frame.CloseInvalidPayload},
		{"invalid UTF-8 inside", compressedFrame(true, frame.OpText, clientDeflate([]byte("ok \xff\xfe"))), frame.CloseInvalidPayload},
	} {
		fc := openFake(t, s, offerDeflate)
		fc.in = tc.in
		s.OnTraffic(fc)
		fs := serverFrames(t, fc.out.Bytes())
		if len(fs) != 1 || fs[0].op != frame.OpClose {
			t.Fatalf("%s: frames %+v, want a close", tc.name, fs)
		}
		if code, _, _ := frame.ParseClose(fs[0].payload); code != tc.code {
			t.Fatalf("%s: close %d %q, want %d", tc.name, code, fs[0].payload[2:], tc.code)
		}
	}

	// Without the negotiation RSV1 is a protocol error, as before.
	plain := openFake(t, s)
	plain.in = compressedFrame(true, frame.OpText, z)
	s.OnTraffic(plain)
	if fs := serverFrames(t, plain.out.Bytes()); len(fs) != 1 || fs[0].op != frame.OpClose || fs[0].payload[1] != 0xea {
		t.Fatalf("RSV1 without negotiation: %+v", fs)
	}
}

// TestDeflateEchoAllocs: inflating, echoing and compressing a message
// allocates nothing in steady state.
func TestDeflateEchoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under -race")
	}
	s, _ := newFakeServer(t, nil)
	fc := openFake(t, s, offerDeflate)
	fc.sink = true
	msg := compressedFrame(true, frame.OpText, clientDeflate(bytes.Repeat([]byte(`{"text":"hello"}`), 64)))
	buf := make([]byte, len(msg))
	run := func() {
		copy(buf, msg) // the parser unmasks in place
		fc.in = buf
		s.OnTraffic(fc)
	}
	run()
	if n := testing.AllocsPerRun(200, run); n != 0 {
		t.Fatalf("%v allocs per compressed echo", n)
	}
}

// subscribeFake opens a protocol connection, with or without compression,
// subscribed to ch.
func subscribeFake(t testing.TB, s *Server, ch string, deflate bool) *fakeConn {
	t.Helper()
	h := []string{"Sec-WebSocket-Protocol: " + Subprotocol}
	if deflate {
		h = append(h, offerDeflate)
	}
	fc := openFake(t, s, h...)
	fc.in = masked(true, frame.OpText, []byte(`{"id":1,"op":"subscribe","channel":"`+ch+`"}`))
	if act := s.OnTraffic(fc); act != gnet.None {
		t.Fatalf("subscribe: %v", act)
	}
	fs := serverFrames(t, fc.out.Bytes())
	if len(fs) == 0 || !bytes.Contains(fs[0].payload, []byte(`"ok":true`)) {
		t.Fatalf("subscribe reply %+v", fs)
	}
	fc.out.Reset()
	return fc
}

// TestDeflateFanOut: subscribers that negotiated compression get the
// publication compressed, the others plain, from two shared frames: the
// twin is built once per publication, whatever the number of compressed
// subscribers. A message under the minimum size goes plain to everybody.
func TestDeflateFanOut(t *testing.T) {
	s, l := newFakeServer(t, func(c *Config) { c.Echo = false })
	var subs []*fakeConn
	for i := range 6 {
		subs = append(subs, subscribeFake(t, s, "bench:a", i%2 == 0))
	}
	l.waker = func() { l.drainInbox() }
	data := []byte(`{"text":"` + strings.Repeat("hello ", 40) + `"}`)
	s.onPublication("bench:a", broker.Publication{Offset: 1, Data: data})
	var plain []byte
	for i, fc := range subs {
		fs := serverFrames(t, fc.out.Bytes())
		if len(fs) != 1 || fs[0].op != frame.OpText || fs[0].rsv1 != (i%2 == 0) {
			t.Fatalf("subscriber %d: %+v", i, fs)
		}
		if i == 1 {
			plain = fs[0].payload
		}
	}
	if !bytes.Contains(plain, data) {
		t.Fatalf("plain push %q", plain)
	}
	for i := 0; i < len(subs); i += 2 {
		fs := serverFrames(t, subs[i].out.Bytes())
		if got := inflate(t, fs[0].payload); !bytes.Equal(got, plain) {
			t.Fatalf("subscriber %d inflated %q, want %q", i, got, plain)
		}
		if len(fs[0].payload) >= len(plain)/2 {
			t.Fatalf("%d compressed bytes for %d", len(fs[0].payload), len(plain))
		}
		subs[i].out.Reset()
	}
	subs[1].out.Reset()
	s.onPublication("bench:a", broker.Publication{Offset: 2, Data: []byte(`{"t":1}`)})
	for i, fc := range subs[:2] {
		if fs := serverFrames(t, fc.out.Bytes()); len(fs) != 1 || fs[0].rsv1 {
			t.Fatalf("short publication to subscriber %d: %+v", i, fs)
		}
	}
}

// TestTwinBuiltOnce: loops racing for a publication's twin deflate it once
// and all get the same frame.
func TestTwinBuiltOnce(t *testing.T) {
	f := encodePush("chat:a", 1, bytes.Repeat([]byte("x"), 1000))
	defer f.Release()
	s, l := newFakeServer(t, nil)
	_ = s
	builds := 0
	build := func(g *shard.Frame) *shard.Frame { builds++; return l.buildTwin(g) }
	got := make(chan *shard.Frame, 8)
	for range 8 {
		go func() { got <- f.Twin(build) }()
	}
	first := <-got
	for range 7 {
		if tw := <-got; tw != first {
			t.Fatal("two twins")
		}
	}
	if builds != 1 || first == f || first.Buf[0]&0x40 == 0 {
		t.Fatalf("%d builds, twin %p of %p, first byte %#x", builds, first, f, first.Buf[0])
	}
}

// TestDeflateFanOutAllocs holds the shared-compression fan-out to zero
// allocations per publication, with every subscriber and with half of them
// compressed: the twin's buffer comes from the frame pools and the
// compressor is the loop's.
func TestDeflateFanOutAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items on purpose under -race")
	}
	for _, every := range []int{1, 2} {
		s, l := newFakeServer(t, func(c *Config) { c.Echo = false })
		const n = 2000
		conns := make([]*fakeConn, n)
		for i := range conns {
			conns[i] = subscribeFake(t, s, "bench:a", i%every == 0)
			conns[i].sink = true
		}
		l.waker = func() { l.drainInbox() }
		data := []byte(`{"user":"alice","text":"` + strings.Repeat("hello world ", 16) + `"}`)
		var offset uint64
		publish := func() {
			offset++
			s.onPublication("bench:a", broker.Publication{Offset: offset, Data: data})
		}
		publish()
		before := conns[0].sunk
		if allocs := testing.AllocsPerRun(100, publish); allocs != 0 {
			t.Fatalf("1 in %d compressed: %v allocs per publication to %d subscribers", every, allocs, n)
		}
		z := (conns[0].sunk - before) / 101
		if z <= 0 || z >= len(data) {
			t.Fatalf("compressed subscriber got %d bytes per publication of %d", z, len(data))
		}
		if every == 2 && (conns[1].sunk-before)/101 <= len(data) {
			t.Fatalf("plain subscriber got %d bytes per publication of %d", (conns[1].sunk-before)/101, len(data))
		}
	}
}

// TestDeflateGorilla round-trips random messages (JSON-like, random bytes,
// runs, sizes around the deflate block and window boundaries) through a
// gorilla/websocket client with compression, which deflates and inflates
// with the standard library's compress/flate: no code in common with
// klauspost's. Then the protocol path: compressed and plain gorilla
// subscribers get the same publications.
func TestDeflateGorilla(t *testing.T) {
	s := startServer(t, func(c *Config) { c.MaxMessage = 1 << 20 })
	d := websocket.Dialer{EnableCompression: true}
	ws, resp, err := d.Dial("ws://"+s.Addr()+"/ws", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer ws.Close()
	if ext := resp.Header.Get("Sec-Websocket-Extensions"); !strings.HasPrefix(ext, "permessage-deflate") {
		t.Fatalf("extensions %q", ext)
	}
	r := rand.New(rand.NewPCG(7, 7))
	n := 300
	if testing.Short() || raceEnabled {
		n = 60
	}
	for i := range n {
		msg := randomPayload(r, 200<<10)
		ws.EnableWriteCompression(r.IntN(4) != 0)
		op := websocket.BinaryMessage
		if r.IntN(2) == 0 {
			op = websocket.TextMessage
			msg = bytes.ToValidUTF8(msg, []byte("?"))
		}
		_ = ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := ws.WriteMessage(op, msg); err != nil {
			t.Fatalf("message %d: write: %v", i, err)
		}
		_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		gotOp, got, err := ws.ReadMessage()
		if err != nil || gotOp != op || !bytes.Equal(got, msg) {
			t.Fatalf("message %d (%d bytes): echo %d bytes, op %d, %v", i, len(msg), len(got), gotOp, err)
		}
	}

	ps := startServer(t, func(c *Config) { c.Echo = false })
	dial := func(compress bool) *websocket.Conn {
		d := websocket.Dialer{EnableCompression: compress, Subprotocols: []string{Subprotocol}}
		c, _, err := d.Dial("ws://"+ps.Addr()+"/ws", nil)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	zc, pc, pub := dial(true), dial(false), dial(true)
	for _, c := range []*websocket.Conn{zc, pc} {
		_ = c.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"op":"subscribe","channel":"chat:z"}`))
		if _, m, err := c.ReadMessage(); err != nil || !bytes.Contains(m, []byte(`"ok":true`)) {
			t.Fatalf("subscribe: %q %v", m, err)
		}
	}
	for i := range 20 {
		text := strings.Repeat(fmt.Sprintf("message %d ", i), i*10)
		_ = pub.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"id":%d,"op":"publish","channel":"chat:z","data":{"text":%q}}`, i+2, text)))
		for _, c := range []*websocket.Conn{zc, pc} {
			for {
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, m, err := c.ReadMessage()
				if err != nil {
					t.Fatalf("publication %d: %v", i, err)
				}
				if bytes.Contains(m, []byte(`"join"`)) || bytes.Contains(m, []byte(`"leave"`)) {
					continue
				}
				if !bytes.Contains(m, []byte(fmt.Sprintf(`{"text":%q}`, text))) {
					t.Fatalf("publication %d: %q", i, m)
				}
				break
			}
		}
		if _, m, err := pub.ReadMessage(); err != nil || !bytes.Contains(m, []byte(`"ok":true`)) {
			t.Fatalf("publish reply %q %v", m, err)
		}
	}
}

// randomPayload is a message of the kinds a server sees, of a random size
// up to max with sizes around deflate's boundaries favoured.
func randomPayload(r *rand.Rand, max int) []byte {
	sizes := []int{0, 1, 127, 128, 129, 1024, 16384, 32767, 32768, 32769, 65535, 65536, 65537}
	n := r.IntN(max + 1)
	if r.IntN(2) == 0 {
		n = min(sizes[r.IntN(len(sizes))], max)
	}
	b := make([]byte, 0, n)
	switch r.IntN(3) {
	case 0:
		words := []string{`{"channel":"chat:room42",`, `"offset":`, `"data":{"text":"`, `hello`, ` world`, `"}}`}
		for len(b) < n {
			b = append(b, words[r.IntN(len(words))]...)
		}
		b = b[:n]
	case 1:
		for len(b) < n {
			b = append(b, byte(r.Uint32()))
		}
	default:
		for len(b) < n {
			b = append(b, byte('a'+r.IntN(3)))
		}
	}
	return b
}

// TestCompressionConfig: the defaults validate, and each bad value is
// refused with the flag's name.
func TestCompressionConfig(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err != nil || cfg.Compression != "on" || cfg.CompressionLevel != 1 || cfg.CompressionMinSize != 128 {
		t.Fatalf("defaults: %v %+v", err, cfg)
	}
	for _, tc := range []struct {
		field  string
		mutate func(*Config)
	}{
		{"compression", func(c *Config) { c.Compression = "yes" }},
		{"compression-min-size", func(c *Config) { c.CompressionMinSize = -1 }},
		{"compression-level", func(c *Config) { c.CompressionLevel = 0 }},
		{"compression-level", func(c *Config) { c.CompressionLevel = 10 }},
	} {
		c := DefaultConfig()
		tc.mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.field+":") {
			t.Errorf("%s: %v", tc.field, err)
		}
	}
}
