package main

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// waitExit waits up to limit for the server to exit and returns its error
// and how long it took from since.
func (p *proc) waitExit(t *testing.T, since time.Time, limit time.Duration) (time.Duration, error) {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		return time.Since(since), err
	case <-time.After(limit):
		t.Fatalf("server still running %v after the signal; log: %v", limit, p.log())
		return 0, nil
	}
}

// TestDrainFewConnsEndsEarly: a drain of one connection whose client
// answers the close ends as soon as it has closed, not at the end of the
// grace or of the close timeout.
func TestDrainFewConnsEndsEarly(t *testing.T) {
	p := startServe(t, "", "--echo", "--drain-grace", "10s", "--close-timeout", "5s")
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+p.ws+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if err := ws.WriteMessage(websocket.TextMessage, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != "hello" {
		t.Fatalf("echo %q %v", msg, err)
	}
	// gorilla answers the server's close frame while reading.
	readErr := make(chan error, 1)
	go func() {
		_ = ws.SetReadDeadline(time.Now().Add(15 * time.Second))
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				readErr <- err
				return
			}
		}
	}()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	took, err := p.waitExit(t, start, 8*time.Second)
	if err != nil {
		t.Fatalf("exit: %v, want 0", err)
	}
	if took > 2*time.Second {
		t.Fatalf("exited %v after SIGTERM with one client that closed at once (grace 10s, close timeout 5s)", took)
	}
	if err := <-readErr; !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("client saw %v, want close 1001", err)
	}
}

// TestSecondSignalExits: a second SIGTERM during a drain exits at once,
// with a non-zero status, however long the drain would still take.
func TestSecondSignalExits(t *testing.T) {
	p := startServe(t, "", "--echo", "--drain-grace", "30s", "--close-timeout", "30s")
	// A client that upgrades and then never reads nor answers.
	nc, err := net.DialTimeout("tcp", p.ws, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req := "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := nc.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if resp, err := http.ReadResponse(bufio.NewReader(nc), nil); err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.line("draining") == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no draining line after SIGTERM; log: %v", p.log())
		}
		time.Sleep(10 * time.Millisecond) // polling the log
	}
	select {
	case err := <-p.done:
		t.Fatalf("server exited (%v) during a drain its client holds open", err)
	default:
	}
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	took, err := p.waitExit(t, start, 5*time.Second)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() <= 0 {
		t.Fatalf("exit after a second SIGTERM: %v, want a non-zero status", err)
	}
	if took > 2*time.Second {
		t.Fatalf("exited %v after the second SIGTERM", took)
	}
}
