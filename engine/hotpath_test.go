package engine

import (
	"bytes"
	"io"
	"log/slog"
	"testing"
	"unsafe"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsedge/wsedge/frame"
)

// fakeConn is a gnet.Conn over in-memory buffers, to drive the handler's
// hot path on the test goroutine. Methods the handler does not use panic
// through the nil embedded interface.
type fakeConn struct {
	gnet.Conn
	in     []byte
	out    bytes.Buffer
	ctx    any
	closed bool
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

func (f *fakeConn) Write(b []byte) (int, error) { return f.out.Write(b) }

func (f *fakeConn) Writev(bs [][]byte) (int, error) {
	n := 0
	for _, b := range bs {
		m, _ := f.out.Write(b)
		n += m
	}
	return n, nil
}

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
func openFake(t testing.TB, s *Server) *fakeConn {
	t.Helper()
	fc := &fakeConn{}
	if _, act := s.OnOpen(fc); act != gnet.None {
		t.Fatalf("OnOpen action %v", act)
	}
	fc.in = []byte(upgradeRequest("/ws"))
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
