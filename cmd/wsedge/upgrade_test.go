package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// echoClients opens n echo connections to addr and checks one round trip each.
func echoClients(t *testing.T, addr string, n int) []*websocket.Conn {
	t.Helper()
	conns := make([]*websocket.Conn, n)
	for i := range conns {
		ws, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ws.Close() })
		conns[i] = ws
	}
	roundTrips(t, conns, "before")
	return conns
}

func roundTrips(t *testing.T, conns []*websocket.Conn, tag string) {
	t.Helper()
	for i, ws := range conns {
		msg := fmt.Sprintf("%s %d", tag, i)
		_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		if err := ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatalf("conn %d: %v", i, err)
		}
		if _, got, err := ws.ReadMessage(); err != nil || string(got) != msg {
			t.Fatalf("conn %d: echo %q %v, want %q", i, got, err, msg)
		}
	}
}

func (p *proc) waitLine(t *testing.T, msg string, limit time.Duration) map[string]any {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		if l := p.line(msg); l != nil {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q line after %v; log: %v", msg, limit, p.log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// goroutines reads go_goroutines from an admin port.
func goroutines(t *testing.T, admin string) int {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	t.Fatal("no go_goroutines")
	return 0
}

// TestTakeoverEcho runs the real binary twice: the second takes the
// first's connections over on the same port; the first exits 0, the
// clients' next round trips are answered by the second, and its goroutine
// count does not grow with the connections.
func TestTakeoverEcho(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "handoff.sock")
	old := startServe(t, "", "--echo", "--handoff-socket", "unix://"+sock)
	old.waitLine(t, "handoff socket", 5*time.Second)
	const n = 300
	conns := echoClients(t, old.ws, n)
	start := time.Now()
	neu := startServe(t, "", "--echo", "--listen", old.ws, "--takeover", "unix://"+sock, "--handoff-socket", "unix://"+sock)
	if _, err := old.waitExit(t, start, 20*time.Second); err != nil {
		t.Fatalf("old process: %v, want exit 0; log: %v", err, old.log())
	}
	done := neu.waitLine(t, "takeover done", 5*time.Second)
	if got := done["connections"]; got != float64(n) {
		t.Fatalf("took %v connections, want %d", got, n)
	}
	roundTrips(t, conns, "after")
	// The new process serves the next upgrade on the same socket.
	neu.waitLine(t, "handoff socket", 15*time.Second)
	// Goroutines: a constant, not one per connection (gnet's enroll
	// workers go idle and expire).
	deadline := time.Now().Add(20 * time.Second)
	for g := goroutines(t, neu.admin); g > 100; g = goroutines(t, neu.admin) {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines with %d connections", g, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestUpgradeCommand: `wsedge upgrade` starts the new process, which takes
// over and reports; the command exits 0.
func TestUpgradeCommand(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "handoff.sock")
	old := startServe(t, "", "--echo", "--handoff-socket", "unix://"+sock)
	old.waitLine(t, "handoff socket", 5*time.Second)
	conns := echoClients(t, old.ws, 20)
	cmd := exec.Command(binPath, "upgrade", "--handoff-socket", "unix://"+sock, "--log", filepath.Join(t.TempDir(), "new.log"),
		"--", "--echo", "--listen", old.ws, "--admin", "127.0.0.1:0", "--insecure-no-auth")
	out, err := cmd.CombinedOutput()
	if m := regexp.MustCompile(`new process (\d+)`).FindSubmatch(out); m != nil {
		pid, _ := strconv.Atoi(string(m[1]))
		t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	}
	if err != nil || !strings.Contains(string(out), "ok 20 connections") {
		t.Fatalf("upgrade: %v\n%s\nold: %v", err, out, old.log())
	}
	if _, err := old.waitExit(t, time.Now(), 20*time.Second); err != nil {
		t.Fatalf("old process: %v", err)
	}
	roundTrips(t, conns, "after")
}

// TestUpgradeSIGUSR2: SIGUSR2 makes the running process start its own
// binary to take over.
func TestUpgradeSIGUSR2(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "handoff.sock")
	old := startServe(t, "", "--echo", "--handoff-socket", "unix://"+sock)
	old.waitLine(t, "handoff socket", 5*time.Second)
	conns := echoClients(t, old.ws, 20)
	if err := old.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	rep := old.waitLine(t, "SIGUSR2: the new process reports", 20*time.Second)
	if pid, ok := rep["pid"].(float64); ok {
		t.Cleanup(func() { _ = syscall.Kill(int(pid), syscall.SIGKILL) })
	}
	if r, _ := rep["report"].(string); !strings.HasPrefix(r, "ok 20 connections") {
		t.Fatalf("report %q; old: %v", r, old.log())
	}
	// The new process shares the old one's stderr, so the harness cannot
	// see the old one's end there: its last line, then its zombie.
	old.waitLine(t, "stopped", 20*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", old.cmd.Process.Pid))
		if err != nil || strings.Contains(string(b), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("old process still running: %s", b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	roundTrips(t, conns, "after")
}

// TestTakeoverKilled: the new process is killed (SIGKILL) after its first
// batch. The old one keeps serving every connection it did not see
// acknowledged, exactly as many as it says it kept, and those clients
// notice nothing; the ones it handed over die with the new process.
func TestTakeoverKilled(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "handoff.sock")
	old := startServe(t, "", "--echo", "--handoff-socket", "unix://"+sock)
	old.waitLine(t, "handoff socket", 5*time.Second)
	const n = 1200
	conns := echoClients(t, old.ws, n)
	neu := startServe(t, "", "--echo", "--listen", old.ws, "--takeover", "unix://"+sock, "--log-level", "debug")
	// After its second batch is enrolled the first one's ack has left
	// (a batch is acknowledged before the next is read).
	deadline := time.Now().Add(20 * time.Second)
	for enrolled := 0; enrolled < 2; {
		enrolled = 0
		for _, l := range neu.log() {
			if l["msg"] == "handoff batch enrolled" {
				enrolled++
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d batches enrolled; log: %v", enrolled, neu.log())
		}
		time.Sleep(time.Millisecond)
	}
	_ = neu.cmd.Process.Kill()
	failed := old.waitLine(t, "handoff failed; this process keeps serving every connection it did not hand over", 20*time.Second)
	var gone int
	if _, err := fmt.Sscanf(failed["err"].(string), "after %d connections handed over", &gone); err != nil {
		t.Fatalf("%v: %v", failed, err)
	}
	if gone == 0 || gone == n {
		t.Fatalf("%d of %d handed over before the kill, want some", gone, n)
	}
	ok := 0
	for i, ws := range conns {
		msg := fmt.Sprint("after ", i)
		_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		if ws.WriteMessage(websocket.TextMessage, []byte(msg)) != nil {
			continue
		}
		if _, got, err := ws.ReadMessage(); err == nil {
			if string(got) != msg {
				t.Fatalf("conn %d: echo %q, want %q", i, got, msg)
			}
			ok++
		}
	}
	if ok != n-gone {
		t.Fatalf("%d connections answered, the old process kept %d", ok, n-gone)
	}
	// It listens again: a new client is served.
	more := echoClients(t, old.ws, 1)
	roundTrips(t, more, "later")
}
