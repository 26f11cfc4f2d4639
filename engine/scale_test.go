package engine

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/wsedge/wsedge/frame"
	"github.com/wsedge/wsedge/metrics"
)

// openMany upgrades n raw connections from this goroutine (no goroutine per
// client either) and returns them.
func openMany(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	req := []byte(upgradeRequest("/ws"))
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c)
		if _, err := c.Write(req); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	// Read every 101 after all requests are out, so the handshakes overlap.
	buf := make([]byte, 512)
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := c.Read(buf)
		if err != nil || !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 101 ") {
			t.Fatalf("conn %d: %q %v", i, buf[:n], err)
		}
	}
	return conns
}

// TestGoroutinesConstant opens 5,000 connections and checks that the
// server's goroutine count does not grow with them.
func TestGoroutinesConstant(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 5,000 sockets")
	}
	s := startServer(t, nil)
	// One connection first, so that every lazily started goroutine exists.
	openMany(t, s.Addr(), 20)
	base := runtime.NumGoroutine()
	conns := openMany(t, s.Addr(), 5000)
	checkFor(t, 5*time.Second, func() error {
		if n := s.m.Open(); n != 5020 {
			return fmt.Errorf("server holds %d connections, want 5020", n)
		}
		return nil
	})
	if n := runtime.NumGoroutine(); n > base+4 {
		t.Fatalf("goroutines grew from %d to %d with 5,000 connections", base, n)
	}
	// Every connection still works: echo on a sample of them.
	for i := 0; i < len(conns); i += 500 {
		msg := fmt.Sprintf("conn %d", i)
		if _, err := conns[i].Write(masked(true, frame.OpText, []byte(msg))); err != nil {
			t.Fatal(err)
		}
		c := &rawClient{t: t, nc: conns[i], br: bufio.NewReader(conns[i])}
		c.expectFrame(frame.OpText, msg)
	}
	for _, c := range conns {
		c.Close()
	}
	checkFor(t, 10*time.Second, func() error {
		if n := s.m.Open(); n != 20 {
			return fmt.Errorf("%d connections still open after closing 5,000", n)
		}
		return nil
	})
	if n := runtime.NumGoroutine(); n > base+4 {
		t.Fatalf("goroutines %d after mass disconnect, base %d", n, base)
	}
}

// TestConnectionCeiling fills the server to its ceiling: further clients get
// 503 and the connections already open keep working.
func TestConnectionCeiling(t *testing.T) {
	s := startServer(t, func(c *Config) { c.MaxConns = 50 })
	conns := openMany(t, s.Addr(), 50)
	for range 5 {
		c := dialRaw(t, s.Addr())
		c.send([]byte(upgradeRequest("/ws")))
		if resp := c.readResponse(); resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("over the ceiling: status %d, want 503", resp.StatusCode)
		}
	}
	// --max-conns is below the fd ceiling here, so that is the reason.
	if got := s.m.Rejected(metrics.RejectMaxConns).Get(); got != 5 {
		t.Fatalf("rejected_total{max_conns} = %d, want 5", got)
	}
	if got := s.m.Rejected(metrics.RejectFDCeiling).Get(); got != 0 {
		t.Fatalf("rejected_total{fd_ceiling} = %d, want 0", got)
	}
	c := &rawClient{t: t, nc: conns[0], br: bufio.NewReader(conns[0])}
	c.send(masked(true, frame.OpText, []byte("alive")))
	c.expectFrame(frame.OpText, "alive")
}

// TestDrain checks a graceful drain: readiness drops, every client gets
// close 1001, spread over the grace period, and new clients get 503.
func TestDrain(t *testing.T) {
	s := startServer(t, func(c *Config) { c.DrainGrace = 600 * time.Millisecond })
	const n = 30
	clients := make([]*rawClient, n)
	for i := range clients {
		clients[i] = handshake(t, s.Addr())
	}
	done := make(chan struct{})
	start := time.Now()
	go func() { s.Drain(); close(done) }()
	checkFor(t, 2*time.Second, func() error {
		if s.Ready() {
			return fmt.Errorf("still ready while draining")
		}
		return nil
	})
	resp, err := http.Get("http://" + s.AdminAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz %d while draining, want 503", resp.StatusCode)
	}
	late := dialRaw(t, s.Addr())
	late.send([]byte(upgradeRequest("/ws")))
	if r := late.readResponse(); r.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("new client during drain: %d, want 503", r.StatusCode)
	}
	// Each client records when its close frame arrives.
	arrived := make(chan time.Duration, n)
	errs := make(chan error, n)
	for i, c := range clients {
		go func() {
			_, op, p, err := c.readFrame()
			if err != nil || op != frame.OpClose || len(p) < 2 || frame.CloseCode(uint16(p[0])<<8|uint16(p[1])) != frame.CloseGoingAway {
				errs <- fmt.Errorf("client %d: op %v payload %q err %v, want close 1001", i, op, p, err)
				return
			}
			arrived <- time.Since(start)
			if _, err := c.nc.Write(closeFrame(frame.CloseGoingAway, "")); err != nil {
				errs <- err
			}
		}()
	}
	var first, last time.Duration
	for i := 0; i < n; i++ {
		select {
		case at := <-arrived:
			if i == 0 {
				first = at
			}
			last = at
		case err := <-errs:
			t.Fatal(err)
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d clients got close 1001", i, n)
		}
	}
	for _, c := range clients {
		c.expectEOF()
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Drain did not return after every client closed")
	}
	if last-first < 200*time.Millisecond {
		t.Fatalf("closes spread over %v, want them spread over the 600ms grace", last-first)
	}
	if n := s.m.Open(); n != 0 {
		t.Fatalf("%d connections open after drain", n)
	}
}

// TestGoroutinesConstantSubscribed: 5,000 protocol connections subscribed to
// one channel receive a publication, and the goroutine count does not grow
// with them.
func TestGoroutinesConstantSubscribed(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 5,000 sockets")
	}
	s := protoServer(t, nil)
	pub := dialProto(t, s.Addr())
	pub.ok(`{"op":"ping"}`)
	base := runtime.NumGoroutine()
	const n = 5000
	req := []byte(upgradeRequest("/ws", "Sec-WebSocket-Protocol: "+Subprotocol))
	sub := masked(true, frame.OpText, []byte(`{"id":1,"op":"subscribe","channel":"bench:g"}`))
	conns := make([]*rawClient, n)
	for i := range conns {
		c := dialRaw(t, s.Addr())
		c.send(append(append([]byte{}, req...), sub...))
		conns[i] = c
	}
	for i, c := range conns {
		if resp := c.readResponse(); resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("conn %d: status %d", i, resp.StatusCode)
		}
		_, _, reply, err := c.readFrame()
		if err != nil || !strings.Contains(string(reply), `"ok":true`) {
			t.Fatalf("conn %d: subscribe reply %q %v", i, reply, err)
		}
	}
	if g := runtime.NumGoroutine(); g > base+4 {
		t.Fatalf("goroutines grew from %d to %d with %d subscribers", base, g, n)
	}
	pub.ok(`{"op":"publish","channel":"bench:g","data":"to all"}`)
	for i, c := range conns {
		_, _, p, err := c.readFrame()
		if err != nil || !strings.Contains(string(p), `"to all"`) {
			t.Fatalf("subscriber %d: %q %v", i, p, err)
		}
	}
}
