package engine

import (
	"bufio"
	"bytes"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"

	"github.com/wsedge/wsedge/frame"
	"github.com/wsedge/wsedge/shard"
)

// Issue 12's figures that Go benchmarks measure (BENCHMARKS.md, "Issue 12"):
//
//   - BenchmarkBroadcastDeflate: server CPU per broadcast of a 1 KiB chat
//     push to 10,000 subscribers with compression off, on for all, on for
//     half, beside gorilla/websocket's PreparedMessage (which also
//     compresses once per broadcast) in the same run. Both write to sockets
//     that discard, so the figure is the servers' own work without the
//     write syscalls (about 4 µs each here, the same for both).
//   - BenchmarkDeflateChat: wire bytes of one push of a 1 KiB and a 200 B
//     chat payload, plain and compressed at levels 1, 6 and 9, and the time
//     to compress it once.

// cpuTime is the process's CPU time so far (user and system, all
// threads, the GC's included). The machine here is shared: wall time per
// operation stretches with other load, CPU time much less.
func cpuTime() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuPerOp reports CPU time per operation since start.
func cpuPerOp(b *testing.B, start time.Duration, unit string, scale float64) {
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N)/scale, unit)
}

// chatPayload reads a JSON chat payload from testdata/deflate.
func chatPayload(tb testing.TB, name string) []byte {
	b, err := os.ReadFile("testdata/deflate/" + name)
	if err != nil {
		tb.Fatal(err)
	}
	return bytes.TrimSpace(b)
}

const broadcastSubs = 10000

func BenchmarkBroadcastDeflate(b *testing.B) {
	data := chatPayload(b, "chat-1k.json")
	for _, mode := range []struct {
		name  string
		every int // 1 in every negotiates compression; 0: none
	}{{"off", 0}, {"half", 2}, {"all", 1}} {
		b.Run("wsedge/"+mode.name, func(b *testing.B) {
			s, l := newFakeServer(b, func(c *Config) { c.Echo = false })
			l.waker = func() { l.drainInbox() }
			conns := make([]*fakeConn, broadcastSubs)
			for i := range conns {
				conns[i] = subscribeFake(b, s, "bench:a", mode.every != 0 && i%mode.every == 0)
				conns[i].sink = true
			}
			var ch any = "bench:a"
			var offset uint64
			b.ReportAllocs()
			b.ResetTimer()
			start := cpuTime()
			for b.Loop() {
				offset++
				f := encodePush("bench:a", offset, data)
				l.handleMsg(shard.Msg{Kind: msgPush, Conn: offset, Frame: f, Ptr: ch})
				l.flushTouched()
			}
			sunk := 0
			for _, c := range conns {
				sunk += c.sunk
			}
			cpuPerOp(b, start, "cpu-ms/broadcast", 1e6)
			b.ReportMetric(float64(sunk)/float64(b.N*broadcastSubs), "wire-B/delivery")
		})
	}
	push := encodePush("bench:a", 1, data)
	h, _ := frame.ParseHeader(push.Buf)
	msg := append([]byte(nil), push.Buf[h.Size:]...)
	push.Release()
	for _, mode := range []struct {
		name  string
		every int
	}{{"off", 0}, {"half", 2}, {"all", 1}} {
		b.Run("gorilla-prepared/"+mode.name, func(b *testing.B) {
			conns := make([]*websocket.Conn, broadcastSubs)
			sinks := make([]*sinkConn, broadcastSubs)
			for i := range conns {
				conns[i], sinks[i] = gorillaServerConn(b, mode.every != 0 && i%mode.every == 0)
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := cpuTime()
			for b.Loop() {
				pm, err := websocket.NewPreparedMessage(websocket.TextMessage, msg)
				if err != nil {
					b.Fatal(err)
				}
				for _, c := range conns {
					if err := c.WritePreparedMessage(pm); err != nil {
						b.Fatal(err)
					}
				}
			}
			sunk := 0
			for _, s := range sinks {
				sunk += s.n
			}
			cpuPerOp(b, start, "cpu-ms/broadcast", 1e6)
			b.ReportMetric(float64(sunk)/float64(b.N*broadcastSubs), "wire-B/delivery")
		})
	}
}

// sinkConn is a net.Conn that discards what is written to it.
type sinkConn struct {
	net.Conn
	n int
}

func (s *sinkConn) Write(p []byte) (int, error)      { s.n += len(p); return len(p), nil }
func (s *sinkConn) SetWriteDeadline(time.Time) error { return nil }
func (s *sinkConn) SetDeadline(time.Time) error      { return nil }
func (s *sinkConn) Close() error                     { return nil }
func (s *sinkConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (s *sinkConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }

// hijacker is the http.ResponseWriter gorilla's Upgrader hijacks.
type hijacker struct {
	http.ResponseWriter
	c *sinkConn
}

func (h *hijacker) Header() http.Header { return http.Header{} }
func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return h.c, bufio.NewReadWriter(bufio.NewReader(strings.NewReader("")), bufio.NewWriter(h.c)), nil
}

// gorillaServerConn upgrades a discarding connection with gorilla's
// Upgrader, negotiating compression if deflate is set.
func gorillaServerConn(b *testing.B, deflate bool) (*websocket.Conn, *sinkConn) {
	u := websocket.Upgrader{EnableCompression: true}
	r, _ := http.NewRequest("GET", "http://test/ws", nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Sec-WebSocket-Version", "13")
	r.Header.Set("Sec-WebSocket-Key", testKey)
	if deflate {
		r.Header.Set("Sec-WebSocket-Extensions", "permessage-deflate; server_no_context_takeover; client_no_context_takeover")
	}
	sc := &sinkConn{}
	c, err := u.Upgrade(&hijacker{c: sc}, r, nil)
	if err != nil {
		b.Fatal(err)
	}
	sc.n = 0
	return c, sc
}

func BenchmarkDeflateChat(b *testing.B) {
	for _, name := range []string{"chat-1k.json", "chat-200.json"} {
		data := chatPayload(b, name)
		push := encodePush("chat:room42", 12345, data)
		h, _ := frame.ParseHeader(push.Buf)
		msg := push.Buf[h.Size:]
		for _, level := range []int{1, 6, 9} {
			b.Run(strings.TrimSuffix(name, ".json")+"/level"+string(rune('0'+level)), func(b *testing.B) {
				d, err := frame.NewDeflater(level, frame.MaxDeflateWindowBits)
				if err != nil {
					b.Fatal(err)
				}
				dst := make([]byte, 0, 4096)
				var z []byte
				b.ReportAllocs()
				start := cpuTime()
				for b.Loop() {
					z = d.Append(dst[:0], msg)
				}
				cpuPerOp(b, start, "cpu-us/op", 1e3)
				b.ReportMetric(float64(len(data)), "payload-B")
				b.ReportMetric(float64(len(push.Buf)), "plain-wire-B")
				b.ReportMetric(float64(frame.HeaderLen(len(z))+len(z)), "deflate-wire-B")
			})
		}
		push.Release()
	}
}
