package engine

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/wsedge/wsedge/ingest"
)

// ingestServer starts a protocol server with the ingest socket in a
// temporary directory and returns it with the socket's address.
func startIngestServer(t testing.TB, mutate func(*Config)) (*Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ingest.sock")
	s := protoServer(t, func(c *Config) {
		c.Ingest.Listen = "unix://" + path
		if mutate != nil {
			mutate(c)
		}
	})
	return s, "unix://" + path
}

// rawIngest is a test connection speaking the wire format by hand.
type rawIngest struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dialIngest(t testing.TB, addr string) *rawIngest {
	t.Helper()
	c, err := net.Dial("unix", addr[len("unix://"):])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawIngest{t: t, c: c, br: bufio.NewReader(c)}
}

func (r *rawIngest) send(b []byte) {
	r.t.Helper()
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

// next reads one response (an error at EOF).
func (r *rawIngest) next() (ingest.Response, error) {
	_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var hdr [4]byte
	if _, err := io.ReadFull(r.br, hdr[:]); err != nil {
		return ingest.Response{}, err
	}
	buf := make([]byte, 4+binary.BigEndian.Uint32(hdr[:]))
	copy(buf, hdr[:])
	if _, err := io.ReadFull(r.br, buf[4:]); err != nil {
		return ingest.Response{}, err
	}
	var resp ingest.Response
	if _, err := ingest.ParseResponse(buf, len(buf), &resp); err != nil {
		return resp, err
	}
	return resp, nil
}

func (r *rawIngest) expect(seq uint64, op ingest.Op, code ingest.Code) ingest.Response {
	r.t.Helper()
	resp, err := r.next()
	if err != nil {
		r.t.Fatalf("seq %d: %v", seq, err)
	}
	if resp.Seq != seq || resp.Op != op || resp.Code != code {
		r.t.Fatalf("got seq %d op %#x code %d (%s), want seq %d op %#x code %d", resp.Seq, resp.Op, resp.Code, resp.Message, seq, op, code)
	}
	return resp
}

func TestIngestPublishAck(t *testing.T) {
	s, addr := startIngestServer(t, nil)
	fi, err := os.Stat(addr[len("unix://"):])
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket file: %v %v, want a socket with mode 0660", fi.Mode(), err)
	}
	sub := dialProto(t, s.Addr())
	sub.ok(`{"op":"subscribe","channel":"chat:a"}`)
	cl, err := ingest.Dial(t.Context(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := 1; i <= 3; i++ {
		off, err := cl.Publish(t.Context(), "chat:a", fmt.Appendf(nil, `{"n":%d}`, i))
		if err != nil || off != uint64(i) {
			t.Fatalf("publish %d: offset %d, %v", i, off, err)
		}
	}
	got := sub.waitPushes(3, onChannel("chat:a"))
	for i, p := range got {
		if p["offset"] != float64(i+1) || p["data"].(map[string]any)["n"] != float64(i+1) {
			t.Fatalf("push %d: %v", i, p)
		}
	}
	// A WebSocket publish on the same channel takes the next offset:
	// one offset sequence, one path.
	res := sub.ok(`{"op":"publish","channel":"chat:a","data":4}`)
	if res["offset"] != float64(4) {
		t.Fatalf("WebSocket publish after ingest: %v", res)
	}
	// Presence through the socket sees the subscriber.
	m, err := cl.Presence(t.Context(), "chat:a")
	if err != nil || len(m) != 1 {
		t.Fatalf("presence: %v %v", m, err)
	}
}

func TestIngestErrorsAndMalformed(t *testing.T) {
	s, addr := startIngestServer(t, func(c *Config) { c.Ingest.MaxPayload = 1000 })
	other, err := ingest.Dial(t.Context(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	sub := dialProto(t, s.Addr())
	sub.ok(`{"op":"subscribe","channel":"chat:x"}`)

	r := dialIngest(t, addr)
	var b []byte
	b = ingest.AppendPublish(b, 1, "nope:x", nil, []byte(`1`))
	b = ingest.AppendPublish(b, 2, "bad channel", nil, []byte(`1`))
	b = ingest.AppendPublish(b, 3, "chat:x", nil, make([]byte, 1001))
	b = ingest.AppendPublish(b, 4, "chat:x", nil, []byte(`{"unterminated"`))
	unknown := ingest.AppendSimple(nil, ingest.OpPing, 5)
	unknown[5] = 0x7f
	b = append(b, unknown...)
	b = ingest.AppendPublish(b, 6, "chat:x", nil, []byte(`"kept"`))
	b = ingest.AppendSimple(b, ingest.OpPing, 7)
	r.send(b)
	r.expect(1, ingest.OpError, ingest.CodeUnknownNamespace)
	r.expect(2, ingest.OpError, ingest.CodeBadChannel)
	r.expect(3, ingest.OpError, ingest.CodePayloadTooLarge)
	r.expect(4, ingest.OpError, ingest.CodeBadPayload)
	r.expect(5, ingest.OpError, ingest.CodeUnknownOp)
	if a := r.expect(6, ingest.OpAck, 0); a.Offset != 1 {
		t.Fatalf("ack 6: offset %d", a.Offset)
	}
	r.expect(7, ingest.OpAck, 0)

	// A publish and a malformed frame in one write: the publish is acked
	// and delivered, the malformed frame answered and the connection
	// closed; the other ingest client and the WebSocket client go on.
	b = ingest.AppendPublish(nil, 8, "chat:x", nil, []byte(`"before"`))
	bad := ingest.AppendPresence(nil, 9, "chat:x")
	bad[HeaderLenForTest] = 200 // channel length beyond the frame
	r.send(append(b, bad...))
	r.expect(8, ingest.OpAck, 0)
	r.expect(0, ingest.OpError, ingest.CodeMalformed)
	if _, err := r.next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after a malformed frame: %v, want EOF", err)
	}
	if off, err := other.Publish(t.Context(), "chat:x", []byte(`"after"`)); err != nil || off != 3 {
		t.Fatalf("other client: %d %v", off, err)
	}
	got := sub.waitPushes(3, onChannel("chat:x"))
	for i, want := range []string{"kept", "before", "after"} {
		if got[i]["data"] != want {
			t.Fatalf("push %d: %v, want %s", i, got[i], want)
		}
	}

	// Wrong version and an oversized length close at once, before the
	// body is read.
	for _, frame := range [][]byte{
		func() []byte { f := ingest.AppendSimple(nil, ingest.OpPing, 1); f[4] = 2; return f }(),
		{0x7f, 0xff, 0xff, 0xff, 1},
	} {
		r := dialIngest(t, addr)
		r.send(frame)
		resp, err := r.next()
		if err != nil || resp.Op != ingest.OpError || !resp.Code.Fatal() {
			t.Fatalf("frame %x: %v %v, want a fatal error", frame, resp, err)
		}
		if _, err := r.next(); !errors.Is(err, io.EOF) {
			t.Fatalf("frame %x: %v, want EOF", frame, err)
		}
	}
}

// HeaderLenForTest is where the first body byte of a frame is.
const HeaderLenForTest = ingest.HeaderLen

func TestIngestPipelinedInOrder(t *testing.T) {
	_, addr := startIngestServer(t, nil)
	r := dialIngest(t, addr)
	const n = 20000
	var b []byte
	for i := uint64(1); i <= n; i++ {
		b = ingest.AppendPublish(b, i, "bench:p", nil, []byte(`0`))
	}
	go func() { _, _ = r.c.Write(b) }()
	for i := uint64(1); i <= n; i++ {
		a := r.expect(i, ingest.OpAck, 0)
		if a.Offset != i {
			t.Fatalf("ack %d: offset %d", i, a.Offset)
		}
	}
}

func TestIngestIdempotency(t *testing.T) {
	s, addr := startIngestServer(t, nil)
	sub := dialProto(t, s.Addr())
	sub.ok(`{"op":"subscribe","channel":"chat:i"}`)
	r := dialIngest(t, addr)
	key := []byte("order-17")
	r.send(ingest.AppendPublish(nil, 1, "chat:i", key, []byte(`"x"`)))
	a := r.expect(1, ingest.OpAck, 0)
	// Retried on another connection, as after a reconnect.
	r2 := dialIngest(t, addr)
	r2.send(ingest.AppendPublish(nil, 1, "chat:i", key, []byte(`"x"`)))
	d := r2.expect(1, ingest.OpAck, 0)
	if d.Offset != a.Offset || string(d.Epoch) != string(a.Epoch) || d.Flags&ingest.AckDuplicate == 0 {
		t.Fatalf("retry: %+v, want the original offset %d flagged duplicate", d, a.Offset)
	}
	// The same key on another channel is another publication.
	r2.send(ingest.AppendPublish(nil, 2, "chat:j", key, []byte(`"y"`)))
	if d := r2.expect(2, ingest.OpAck, 0); d.Flags != 0 {
		t.Fatalf("other channel: %+v", d)
	}
	sub.ok(`{"op":"publish","channel":"chat:i","data":"z"}`)
	got := sub.waitPushes(2, onChannel("chat:i"))
	if len(got) != 2 || got[0]["data"] != "x" || got[1]["data"] != "z" {
		t.Fatalf("pushes %v: the retried publish was delivered twice or lost", got)
	}
}

func TestIdemWindowBounded(t *testing.T) {
	w := newIdemWindow(time.Minute, 64*idemStripes)
	now := time.Now()
	for i := range 100000 {
		k := w.key([]byte("chat:a"), fmt.Appendf(nil, "k%d", i))
		if _, st := w.reserve(k, now); st != idemNew {
			t.Fatalf("key %d: state %d", i, st)
		}
		w.complete(k, uint64(i), "e")
	}
	if n := w.len(); n > 64*idemStripes {
		t.Fatalf("%d keys kept, bound %d", n, 64*idemStripes)
	}
	if w.evicted.Load() == 0 {
		t.Fatal("no eviction counted")
	}
	k := w.key([]byte("chat:a"), []byte("k99999"))
	if e, st := w.reserve(k, now); st != idemDone || e.offset != 99999 {
		t.Fatalf("latest key: %v %d", e, st)
	}
	// After the window every key is new again.
	if _, st := w.reserve(k, now.Add(2*time.Minute)); st != idemNew {
		t.Fatalf("after the window: state %d", st)
	}
	// Expiry is lazy, per stripe: the stripe just used dropped its old keys.
	s := &w.stripes[k.a%idemStripes]
	if len(s.m) != 1 || s.n != 1 {
		t.Fatalf("stripe holds %d keys (%d in its ring) after the window, want 1", len(s.m), s.n)
	}
}

func TestIngestStaleSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ingest.sock")
	// A socket file whose listener is gone: what a crash leaves.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	s := protoServer(t, func(c *Config) { c.Ingest.Listen = "unix://" + path })
	r := dialIngest(t, "unix://"+path)
	r.send(ingest.AppendSimple(nil, ingest.OpPing, 1))
	r.expect(1, ingest.OpAck, 0)

	// A second server on the same live path is refused, and the first
	// keeps its socket.
	cfg := s.cfg
	cfg.Listen, cfg.Admin = "127.0.0.1:0", ""
	s2, err := New(cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Run(t.Context()); !errors.Is(err, ErrSocketInUse) {
		t.Fatalf("second server: %v, want ErrSocketInUse", err)
	}
	r.send(ingest.AppendSimple(nil, ingest.OpPing, 2))
	r.expect(2, ingest.OpAck, 0)

	// A file that is not a socket is never removed.
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Ingest.Listen = "unix://" + plain
	s3, err := New(cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := s3.Run(t.Context()); err == nil {
		t.Fatal("server started on a regular file's path")
	}
	if b, err := os.ReadFile(plain); err != nil || string(b) != "x" {
		t.Fatalf("regular file touched: %q %v", b, err)
	}
}

func TestIngestSocketRemovedOnStop(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ingest.sock")
	cfg := DefaultConfig()
	cfg.Listen, cfg.Admin, cfg.InsecureNoAuth, cfg.DrainGrace = "127.0.0.1:0", "", true, 0
	cfg.Ingest.Listen = "unix://" + path
	s, err := New(cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	checkFor(t, 5*time.Second, func() error { _, err := os.Stat(path); return err })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket file after a clean stop: %v", err)
	}
}

// TestIngestBackPressure stops the subscriber's loop so that its inbox
// fills: the ingest connection must stop being read (acks stall below the
// inbox bound plus one read's worth), nothing is refused or lost, and
// everything is acked and delivered once the loop runs again.
func TestIngestBackPressure(t *testing.T) {
	s, addr := startIngestServer(t, func(c *Config) {
		c.Loops = 1
		c.Ingest.OverloadWait = time.Minute
		c.MaxOutboundMessages = 1 << 20
		c.MaxOutboundBytes = 1 << 30
	})
	sub := dialProto(t, s.Addr())
	sub.ok(`{"op":"subscribe","channel":"bench:bp"}`)
	l := (*s.list.Load())[0]
	release := make(chan struct{})
	blocked := make(chan struct{})
	_ = l.el.Execute(context.Background(), runnable(func() { close(blocked); <-release }))
	<-blocked
	cl, err := ingest.Dial(t.Context(), addr, ingest.Options{MaxInFlight: 50000})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	n := 40000
	if raceEnabled {
		n = inboxHighWater + 8192 // still past the bound, in less time
	}
	calls := make([]*ingest.Call, 0, n)
	for range n {
		c, err := cl.PublishAsync(t.Context(), "bench:bp", []byte(`1`), nil)
		if err != nil {
			t.Fatal(err)
		}
		calls = append(calls, c)
	}
	// Wait until acks stop moving: the inbox is at its bound.
	acked := func() int {
		k := 0
		for _, c := range calls {
			select {
			case <-c.Done:
				k++
			default:
			}
		}
		return k
	}
	last := -1
	checkFor(t, 10*time.Second, func() error {
		a := acked()
		if a == 0 || a != last {
			last = a
			return fmt.Errorf("%d acked, still moving", a)
		}
		return nil
	})
	if last >= n || last > inboxHighWater+4096 {
		t.Fatalf("%d of %d acked while the loop was stopped; bound %d", last, n, inboxHighWater)
	}
	if d := l.inbox.Len(); d > inboxHighWater+4096 {
		t.Fatalf("inbox depth %d over its bound", d)
	}
	close(release)
	if err := cl.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	for i, c := range calls {
		if c.Err != nil || c.Offset != uint64(i+1) {
			t.Fatalf("call %d: offset %d err %v", i, c.Offset, c.Err)
		}
	}
	sub.waitPushes(16, onChannel("bench:bp")) // history 16: pushes flow again
}

// TestIngestGoroutines: ingest connections cost no goroutine.
func TestIngestGoroutines(t *testing.T) {
	_, addr := startIngestServer(t, nil)
	base := runtime.NumGoroutine()
	conns := make([]*rawIngest, 200)
	for i := range conns {
		conns[i] = dialIngest(t, addr)
		conns[i].send(ingest.AppendSimple(nil, ingest.OpPing, 1))
	}
	for _, r := range conns {
		r.expect(1, ingest.OpAck, 0)
	}
	// Transient goroutines (the previous test's cleanup, runtime and
	// timer work under -race) may come and go: a per-connection cost
	// would stay at +200.
	checkFor(t, 5*time.Second, func() error {
		if g := runtime.NumGoroutine(); g > base+5 {
			return fmt.Errorf("%d goroutines with 200 ingest connections, %d before", g, base)
		}
		return nil
	})
}

// TestIngestNeverReadingBounded: a client that pipelines publishes and
// never reads the acks is stopped being read once its unread acks pass
// MaxOutbound: its writes block after a bounded amount, well short of what
// it tries to send, and another ingest client is served meanwhile.
func TestIngestNeverReadingBounded(t *testing.T) {
	_, addr := startIngestServer(t, func(c *Config) { c.Ingest.MaxOutbound = 64 << 10 })
	r := dialIngest(t, addr)
	frame := ingest.AppendPublish(nil, 1, "bench:nr", nil, []byte(`1`))
	var batch []byte
	for range 4096 {
		batch = append(batch, frame...)
	}
	const try = 64 << 20
	written := 0
	for written < try {
		_ = r.c.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := r.c.Write(batch)
		written += n
		if err != nil {
			break // blocked: the server stopped reading
		}
	}
	// Unread acks ≤ 64 KiB (+ one read's worth) answer about 3,000
	// requests; the rest is kernel buffers (a few hundred KiB each way)
	// and one gnet read.
	if written >= 8<<20 {
		t.Fatalf("the server took %d bytes from a client that reads nothing", written)
	}
	other, err := ingest.Dial(t.Context(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Publish(t.Context(), "bench:nr", []byte(`2`)); err != nil {
		t.Fatal(err)
	}
	t.Logf("a client that reads nothing got %d bytes (%d requests) in before the server stopped reading it", written, written/len(frame))
}
