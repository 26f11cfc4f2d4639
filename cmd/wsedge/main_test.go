package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wsedge-bin")
	if err != nil {
		panic(err)
	}
	binPath = filepath.Join(dir, "wsedge")
	out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running `wsedge serve` and the JSON log lines it wrote.
type proc struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []map[string]any
	done  chan error
	ws    string
	admin string
}

// startServe execs the binary (through sh when shell is set, e.g. to lower
// the file limit first) and waits for its "listening" line.
func startServe(t *testing.T, shell string, args ...string) *proc {
	t.Helper()
	args = append([]string{"serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"}, args...)
	// Protocol tests run without tokens unless they configure a key.
	if !hasAuthFlag(args) {
		args = append(args, "--insecure-no-auth")
	}
	var cmd *exec.Cmd
	if shell != "" {
		cmd = exec.Command("sh", append([]string{"-c", shell + `; exec "$0" "$@"`, binPath}, args...)...)
	} else {
		cmd = exec.Command(binPath, args...)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	// Never the user's development secret (a test that needs the same one
	// for `wsedge token` sets the variable itself).
	if os.Getenv("WSEDGE_DEV_SECRET_FILE") == "" {
		cmd.Env = append(os.Environ(), "WSEDGE_DEV_SECRET_FILE="+filepath.Join(t.TempDir(), "dev-secret"))
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan error, 1)}
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				line = map[string]any{"msg": "raw", "text": sc.Text()}
			}
			p.mu.Lock()
			p.lines = append(p.lines, line)
			if line["msg"] == "listening" && p.ws == "" { // a process it started on SIGUSR2 shares its stderr
				p.ws, p.admin = line["ws"].(string), line["admin"].(string)
				close(listening)
			}
			p.mu.Unlock()
		}
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	select {
	case <-listening:
	case err := <-p.done:
		p.done <- err
		t.Fatalf("server exited before listening: %v; log: %v", err, p.log())
	case <-time.After(10 * time.Second):
		t.Fatalf("no listening line; log: %v", p.log())
	}
	return p
}

func hasAuthFlag(args []string) bool {
	for _, a := range args {
		if strings.HasPrefix(a, "--auth") || a == "--insecure-no-auth" {
			return true
		}
	}
	return false
}

func (p *proc) log() []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]map[string]any(nil), p.lines...)
}

func (p *proc) line(msg string) map[string]any {
	for _, l := range p.log() {
		if l["msg"] == msg {
			return l
		}
	}
	return nil
}

func TestServeEchoAndSIGTERM(t *testing.T) {
	p := startServe(t, "", "--echo", "--drain-grace", "200ms")
	limits := p.line("limits")
	if limits == nil || limits["max_conns"] == nil || limits["nofile_soft"] == nil {
		t.Fatalf("no limits line with max_conns and nofile_soft: %v", p.log())
	}
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
	resp, err := http.Get("http://" + p.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "wsedge_connections 1") {
		t.Fatalf("/metrics lacks wsedge_connections 1:\n%s", body)
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err = ws.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("after SIGTERM: %v, want close 1001", err)
	}
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Fatalf("exit: %v, want 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server did not exit after SIGTERM")
	}
}

// TestServeFileLimit runs the server with a low RLIMIT_NOFILE: it must log
// the ceiling, refuse connections beyond it with 503, and keep serving.
func TestServeFileLimit(t *testing.T) {
	p := startServe(t, "ulimit -n 200", "--echo", "--loops", "2")
	limits := p.line("limits")
	// 200 fds less the reserve of 100 and 3 per loop.
	const ceiling = 94
	if limits == nil || limits["nofile_soft"] != float64(200) || limits["max_conns"] != float64(ceiling) {
		t.Fatalf("limits line %v, want nofile_soft 200 and max_conns %d", limits, ceiling)
	}
	var ok, refused int
	var keep []net.Conn
	defer func() {
		for _, c := range keep {
			c.Close()
		}
	}()
	req := "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	for i := 0; i < 130; i++ {
		c, err := net.Dial("tcp", p.ws)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		keep = append(keep, c)
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("conn %d: %v", i, err)
		}
		switch resp.StatusCode {
		case http.StatusSwitchingProtocols:
			ok++
		case http.StatusServiceUnavailable:
			refused++
		default:
			t.Fatalf("conn %d: status %d", i, resp.StatusCode)
		}
	}
	if ok != ceiling || refused != 130-ceiling {
		t.Fatalf("%d upgraded, %d refused; want %d and %d", ok, refused, ceiling, 130-ceiling)
	}
	// The first connection still echoes: a masked "alive" (mask 0).
	if _, err := keep[0].Write([]byte{0x81, 0x85, 0, 0, 0, 0, 'a', 'l', 'i', 'v', 'e'}); err != nil {
		t.Fatal(err)
	}
	echo := make([]byte, 7)
	if _, err := io.ReadFull(keep[0], echo); err != nil || string(echo) != "\x81\x05alive" {
		t.Fatalf("echo on an open connection: %q %v", echo, err)
	}
	resp, err := http.Get("http://" + p.admin + "/metrics")
	if err != nil {
		t.Fatalf("admin after hitting the ceiling: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf(`wsedge_rejected_total{reason="fd_ceiling"} %d`, 130-ceiling); !strings.Contains(string(body), want) {
		t.Fatalf("/metrics lacks %q:\n%s", want, body)
	}
}
