package engine

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/wsedge/wsedge/frame"
)

// startServer runs a server on 127.0.0.1:0 in this process and stops it
// when the test ends.
func startServer(t testing.TB, mutate func(*Config)) *Server {
	t.Helper()
	return startServerLog(t, mutate, testLogger())
}

// testLogger logs warnings, and everything with -v.
func testLogger() *slog.Logger {
	level := slog.LevelWarn
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// startServerLog is startServer with the given logger.
func startServerLog(t testing.TB, mutate func(*Config), log *slog.Logger) *Server {
	t.Helper()
	return startServerFull(t, mutate, nil, log)
}

// startServerHook is startServer with a hook that may replace parts of the
// server (e.g. wrap its broker) before it runs.
func startServerHook(t testing.TB, mutate func(*Config), hook func(*Server)) *Server {
	t.Helper()
	return startServerFull(t, mutate, hook, testLogger())
}

func startServerFull(t testing.TB, mutate func(*Config), hook func(*Server), log *slog.Logger) *Server {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Admin = "127.0.0.1:0"
	cfg.Echo = true
	cfg.DrainGrace = 0
	// Tests of the protocol run without tokens unless they test auth
	// (auth_test.go turns it back on with a key).
	cfg.InsecureNoAuth = true
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if hook != nil {
		hook(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-s.booted:
	case err := <-done:
		t.Fatalf("server did not start: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("server did not stop")
		}
	})
	return s
}

// checkFor polls fn until it returns nil or the timeout passes.
func checkFor(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

const testKey = "dGhlIHNhbXBsZSBub25jZQ=="

func upgradeRequest(path string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n", path)
	fmt.Fprintf(&b, "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n", testKey)
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// rawClient is a minimal WebSocket client over a plain TCP connection, so
// tests control every byte and need no goroutine.
type rawClient struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawClient{t: t, nc: nc, br: bufio.NewReaderSize(nc, 512)}
}

// handshake dials and upgrades, failing the test on anything but 101.
func handshake(t testing.TB, addr string) *rawClient {
	t.Helper()
	c := dialRaw(t, addr)
	c.send([]byte(upgradeRequest("/ws")))
	if resp := c.readResponse(); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade status %d", resp.StatusCode)
	}
	return c
}

func (c *rawClient) send(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *rawClient) readResponse() *http.Response {
	c.t.Helper()
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.t.Fatalf("read response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp
}

// readFrame reads one server frame (servers never mask).
func (c *rawClient) readFrame() (fin bool, op frame.OpCode, payload []byte, err error) {
	var h [2]byte
	if _, err = io.ReadFull(c.br, h[:]); err != nil {
		return
	}
	if h[1]&0x80 != 0 {
		return false, 0, nil, errors.New("server frame is masked")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err = io.ReadFull(c.br, b[:]); err != nil {
			return
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err = io.ReadFull(c.br, b[:]); err != nil {
			return
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(c.br, payload)
	return h[0]&0x80 != 0, frame.OpCode(h[0] & 0x0f), payload, err
}

// expectFrame reads the next frame and checks its opcode and payload.
func (c *rawClient) expectFrame(op frame.OpCode, payload string) {
	c.t.Helper()
	_, gotOp, got, err := c.readFrame()
	if err != nil {
		c.t.Fatalf("read frame: %v", err)
	}
	if gotOp != op || string(got) != payload {
		c.t.Fatalf("frame op %v %q, want op %v %q", gotOp, trim(got), op, trim([]byte(payload)))
	}
}

// expectClose reads frames until a close frame and checks its code, then
// expects the server to close TCP.
func (c *rawClient) expectClose(code frame.CloseCode) string {
	c.t.Helper()
	for {
		_, op, p, err := c.readFrame()
		if err != nil {
			c.t.Fatalf("waiting for close %d: %v", code, err)
		}
		if op != frame.OpClose {
			continue
		}
		if len(p) < 2 || frame.CloseCode(binary.BigEndian.Uint16(p)) != code {
			c.t.Fatalf("close payload %x, want code %d", p, code)
		}
		c.expectEOF()
		return string(p[2:])
	}
}

// expectEOF answers nothing and waits for the server to close the socket.
func (c *rawClient) expectEOF() {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, err := c.br.ReadByte()
		if err == io.EOF || errors.Is(err, net.ErrClosed) || isReset(err) {
			return
		}
		if err != nil {
			c.t.Fatalf("waiting for EOF: %v", err)
		}
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

func trim(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}

// masked builds a masked client frame.
func masked(fin bool, op frame.OpCode, payload []byte) []byte {
	return frame.AppendClientFrame(nil, fin, op, payload, [4]byte{1, 2, 3, 4})
}

func closeFrame(code frame.CloseCode, reason string) []byte {
	return masked(true, frame.OpClose, append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...))
}

func errf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// metricsFlushed makes every loop publish its tallies now.
func (s *Server) metricsFlushed() {
	for _, l := range *s.list.Load() {
		done := make(chan struct{})
		_ = l.el.Execute(context.Background(), runnable(func() { l.flushTally(); close(done) }))
		<-done
	}
}
