package engine

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsedge/wsedge/broker"
	"github.com/wsedge/wsedge/frame"
	"github.com/wsedge/wsedge/shard"
)

// fakeConn is a gnet.Conn over in-memory buffers, to drive the handler's
// hot path on the test goroutine. Methods the handler does not use panic
// through the nil embedded interface.
type fakeConn struct {
	gnet.Conn
	in     []byte
	out    bytes.Buffer
	ctx    any
	sink   bool // count written bytes instead of keeping them
	sunk   int
	writes int // Write calls
}

func (f *fakeConn) Peek(n int) ([]byte, error) {
	if n <= 0 || n > len(f.in) {
		return f.in, nil
	}
	return f.in[:n], nil
}

func (f *fakeConn) Discard(n int) (int, error) {
	if n <= 0 || n > len(f.in) {
		n = len(f.in)
	}
	f.in = f.in[n:]
	return n, nil
}

func (f *fakeConn) Write(b []byte) (int, error) {
	f.writes++
	if f.sink {
		f.sunk += len(b)
		return len(b), nil
	}
	return f.out.Write(b)
}

func (f *fakeConn) Writev(bs [][]byte) (int, error) {
	n := 0
	for _, b := range bs {
		m, _ := f.Write(b)
		n += m
	}
	return n, nil
}

func (f *fakeConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 9), Port: 9}
}

func (f *fakeConn) SetWriteBuffer(int) error { return nil }

func (f *fakeConn) OutboundBuffered() int     { return 0 }
func (f *fakeConn) Fd() int                   { return -1 }
func (f *fakeConn) Context() any              { return f.ctx }
func (f *fakeConn) SetContext(ctx any)        { f.ctx = ctx }
func (f *fakeConn) EventLoop() gnet.EventLoop { return nil }

// newFakeServer builds a Server and one loop without starting gnet.
func newFakeServer(t testing.TB, mutate func(*Config)) (*Server, *loop) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Echo = true
	cfg.InsecureNoAuth = true
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return s, s.loopFor(nil)
}

// openFake runs OnOpen and a successful handshake on a fake connection.
func openFake(t testing.TB, s *Server, headers ...string) *fakeConn {
	t.Helper()
	fc := &fakeConn{}
	if _, act := s.OnOpen(fc); act != gnet.None {
		t.Fatalf("OnOpen action %v", act)
	}
	fc.in = []byte(upgradeRequest("/ws", headers...))
	if act := s.OnTraffic(fc); act != gnet.None {
		t.Fatalf("handshake action %v: %q", act, fc.out.String())
	}
	if !bytes.HasPrefix(fc.out.Bytes(), []byte("HTTP/1.1 101 ")) {
		t.Fatalf("handshake response %q", fc.out.String())
	}
	fc.out.Reset()
	return fc
}

// TestEchoAllocs holds the steady-state echo path (read, parse, unmask,
// write) to zero allocations per message.
func TestEchoAllocs(t *testing.T) {
	s, _ := newFakeServer(t, nil)
	fc := openFake(t, s)
	msg := masked(true, frame.OpText, bytes.Repeat([]byte("a"), 1024))
	buf := make([]byte, len(msg))
	allocs := testing.AllocsPerRun(1000, func() {
		fc.in = append(buf[:0], msg...)
		fc.out.Reset()
		if act := s.OnTraffic(fc); act != gnet.None {
			t.Fatalf("action %v", act)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per echoed message, want 0", allocs)
	}
	if fc.out.Len() != 4+1024 {
		t.Fatalf("echo wrote %d bytes, want %d", fc.out.Len(), 4+1024)
	}
}

func BenchmarkEchoHotPath(b *testing.B) {
	for _, size := range []int{64, 1024, 16 << 10} {
		b.Run(byteLabel(size), func(b *testing.B) {
			s, _ := newFakeServer(b, nil)
			fc := openFake(b, s)
			msg := masked(true, frame.OpBinary, bytes.Repeat([]byte("a"), size))
			buf := make([]byte, len(msg))
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				fc.in = append(buf[:0], msg...)
				fc.out.Reset()
				s.OnTraffic(fc)
			}
		})
	}
}

func byteLabel(n int) string {
	if n >= 1024 {
		return itoa(n/1024) + "KiB"
	}
	return itoa(n) + "B"
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

// TestConnSize keeps the per-connection struct small: with gnet's own
// connection state this is what an idle socket costs in user space.
func TestConnSize(t *testing.T) {
	if n := unsafe.Sizeof(conn{}); n > 160 {
		t.Fatalf("conn is %d bytes, budget 160", n)
	}
}

// TestFanOutAllocs holds a publication's way from the broker's handler to
// the sockets (encoding, hub lookup, post to the inbox, wake-up, drain,
// index lookup, queueing to every subscriber, one writev each) to zero
// allocations, whatever the number of subscribers. The wake-up is the
// loop's own drain here; what gnet's Execute adds is TestWakeAllocs.
func TestFanOutAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items on purpose under -race")
	}
	s, l := newFakeServer(t, func(c *Config) { c.Echo = false })
	const subs = 10000
	conns := make([]*fakeConn, subs)
	for i := range conns {
		fc := openFake(t, s, "Sec-WebSocket-Protocol: "+Subprotocol)
		fc.in = masked(true, frame.OpText, []byte(`{"id":1,"op":"subscribe","channel":"bench:a"}`))
		if act := s.OnTraffic(fc); act != gnet.None || !bytes.Contains(fc.out.Bytes(), []byte(`"ok":true`)) {
			t.Fatalf("subscribe: %v %q", act, fc.out.String())
		}
		fc.sink = true
		conns[i] = fc
	}
	wakes := 0
	l.waker = func() { wakes++; l.drainInbox() }
	data := []byte(`{"t":1234567890,"p":"0123456789abcdef0123456789abcdef"}`)
	var offset uint64
	publish := func() {
		offset++
		s.onPublication("bench:a", broker.Publication{Offset: offset, Data: data})
	}
	publish()
	before := conns[0].sunk
	allocs := testing.AllocsPerRun(100, publish)
	if allocs != 0 {
		t.Fatalf("%v allocs per publication to %d subscribers, want 0", allocs, subs)
	}
	per := (conns[0].sunk - before) / 101
	if per < len(data) || conns[subs-1].sunk != conns[0].sunk {
		t.Fatalf("subscribers got %d and %d bytes; %d per publication", conns[0].sunk, conns[subs-1].sunk, per)
	}
	if wakes != 102 {
		t.Fatalf("%d wake-ups for 102 publications into an idle inbox", wakes)
	}
}

// TestWakeAllocs counts what gnet's EventLoop.Execute allocates per
// wake-up of a loop: its closure around our Runnable and its task-queue
// node. They are gnet's, not ours (our Runnable is built once per loop),
// and a wake-up happens once per idle-to-busy transition of the inbox, not
// per message. The test pins the count so that a change shows.
func TestWakeAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under -race; make test runs this without it")
	}
	s := startServer(t, nil)
	l := (*s.list.Load())
	if len(l) == 0 {
		c := handshake(t, s.Addr())
		defer c.nc.Close()
		checkFor(t, 5*time.Second, func() error {
			if len(*s.list.Load()) == 0 {
				return errf("no loop yet")
			}
			return nil
		})
		l = *s.list.Load()
	}
	done := make(chan struct{}, 1)
	fn := gnet.RunnableFunc(func(context.Context) error { done <- struct{}{}; return nil })
	ctx := context.Background()
	el := l[0].el
	allocs := testing.AllocsPerRun(200, func() {
		_ = el.Execute(ctx, fn)
		<-done
	})
	t.Logf("gnet Execute: %v allocations per wake-up", allocs)
	if allocs > 2 {
		t.Fatalf("%v allocations per wake-up, want at most gnet's 2", allocs)
	}
}

func BenchmarkFanOut(b *testing.B) {
	for _, subs := range []int{1, 100, 10000} {
		b.Run(itoa(subs)+"subs", func(b *testing.B) {
			s, l := newFakeServer(b, func(c *Config) { c.Echo = false })
			for range subs {
				fc := openFake(b, s, "Sec-WebSocket-Protocol: "+Subprotocol)
				fc.in = masked(true, frame.OpText, []byte(`{"id":1,"op":"subscribe","channel":"bench:a"}`))
				s.OnTraffic(fc)
				fc.sink = true
			}
			var ch any = "bench:a"
			data := bytes.Repeat([]byte("a"), 64)
			var offset uint64
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				offset++
				f := encodePush("bench:a", offset, data)
				l.handleMsg(shard.Msg{Kind: msgPush, Conn: offset, Frame: f, Ptr: ch})
				l.flushTouched()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*subs), "ns/delivery")
		})
	}
}

// TestPipelinedRepliesOneWrite: commands that arrive in one read are
// answered with one write.
func TestPipelinedRepliesOneWrite(t *testing.T) {
	s, _ := newFakeServer(t, func(c *Config) { c.Echo = false })
	fc := openFake(t, s, "Sec-WebSocket-Protocol: "+Subprotocol)
	fc.in = nil
	for i := 1; i <= 10; i++ {
		fc.in = append(fc.in, masked(true, frame.OpText, []byte(fmt.Sprintf(`{"id":%d,"op":"ping"}`, i)))...)
	}
	fc.writes = 0
	if act := s.OnTraffic(fc); act != gnet.None {
		t.Fatalf("action %v", act)
	}
	if fc.writes != 1 || bytes.Count(fc.out.Bytes(), []byte(`"ok":true`)) != 10 {
		t.Fatalf("%d writes carrying %q, want 1 write with 10 replies", fc.writes, fc.out.String())
	}
}

// TestReplyBufferNotPinned: after a reply over maxKeptOut the loop drops
// its reply buffer instead of keeping the largest one it ever built.
func TestReplyBufferNotPinned(t *testing.T) {
	s, l := newFakeServer(t, func(c *Config) { c.Echo = false })
	fc := openFake(t, s, "Sec-WebSocket-Protocol: "+Subprotocol)
	data := `"` + strings.Repeat("x", 60_000) + `"`
	for i := range 3 {
		fc.in = masked(true, frame.OpText, []byte(fmt.Sprintf(`{"id":%d,"op":"publish","channel":"chat:big","data":%s}`, i+1, data)))
		if act := s.OnTraffic(fc); act != gnet.None {
			t.Fatalf("publish: %v", act)
		}
	}
	fc.out.Reset()
	fc.in = masked(true, frame.OpText, []byte(`{"id":9,"op":"history","channel":"chat:big","limit":3}`))
	if act := s.OnTraffic(fc); act != gnet.None || fc.out.Len() < 180_000 {
		t.Fatalf("history: %v, %d bytes", act, fc.out.Len())
	}
	if cap(l.out) > maxKeptOut {
		t.Fatalf("reply buffer kept at %d bytes after a 180 KB reply", cap(l.out))
	}
}
