package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsedge/wsedge/broker/redistest"
)

// TestBehindNginx and TestBehindHAProxy run two nodes joined by Redis
// behind the shipped load-balancer configuration (deploy/), its ports
// substituted: a subscriber and a publisher land on different nodes, the
// publication crosses over, and when the subscriber's node is drained the
// subscriber is told to go (close 1001), reconnects through the proxy to
// the other node and recovers what was published meanwhile.
func TestBehindNginx(t *testing.T) {
	testBehindProxy(t, "nginx", startNginx)
}

func TestBehindHAProxy(t *testing.T) {
	testBehindProxy(t, "haproxy", startHAProxy)
}

// startProxy renders the shipped configuration for nodes a and b, starts
// the proxy and returns the address it listens on.
type startProxy func(t *testing.T, bin string, a, b *proc) string

func testBehindProxy(t *testing.T, name string, start startProxy) {
	if testing.Short() {
		t.Skip("starts redis-server, two nodes and " + name)
	}
	bin, err := exec.LookPath(name)
	if err != nil {
		// Debian puts both in /usr/sbin, often not in a user's PATH.
		if _, serr := os.Stat("/usr/sbin/" + name); serr != nil {
			// .ci/run installs it: CI must not pass without running this.
			if os.Getenv("CI") != "" {
				t.Fatalf("%s not found on CI: %v", name, err)
			}
			t.Skipf("%s not installed (apt-get install %s)", name, name)
		}
		bin = "/usr/sbin/" + name
	}
	rs := redistest.Start(t)
	args := []string{"--broker", rs.URL(), "--command-rate", "0", "--drain-grace", "300ms", "--close-timeout", "2s"}
	a := startServe(t, "", args...)
	b := startServe(t, "", args...)
	// HAProxy's health checks, and cross-node delivery, need the nodes
	// ready: each one's canary has come back through Redis.
	deadline := time.Now().Add(10 * time.Second)
	for readyz(a) != http.StatusOK || readyz(b) != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatalf("nodes not ready: /readyz %d %d", readyz(a), readyz(b))
		}
		time.Sleep(50 * time.Millisecond) // polling a readiness endpoint
	}
	lb := start(t, bin, a, b)

	dial := func() *websocket.Conn {
		t.Helper()
		d := websocket.Dialer{Subprotocols: []string{"wsedge.v1.json"}, HandshakeTimeout: 5 * time.Second}
		ws, resp, err := d.Dial("ws://"+lb+"/ws", nil)
		if err != nil {
			status := 0
			if resp != nil {
				status = resp.StatusCode
			}
			t.Fatalf("dial through %s: %v (status %d)", name, err, status)
		}
		t.Cleanup(func() { ws.Close() })
		_ = ws.SetReadDeadline(time.Now().Add(20 * time.Second))
		return ws
	}
	// next returns the next message that is not a presence event.
	next := func(ws *websocket.Conn) map[string]any {
		t.Helper()
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				t.Fatalf("read through %s: %v", name, err)
			}
			var m map[string]any
			if json.Unmarshal(msg, &m) != nil {
				t.Fatalf("bad JSON %s", msg)
			}
			if m["join"] == nil && m["leave"] == nil {
				return m
			}
		}
	}
	call := func(ws *websocket.Conn, cmd string) map[string]any {
		t.Helper()
		if err := ws.WriteMessage(websocket.TextMessage, []byte(cmd)); err != nil {
			t.Fatal(err)
		}
		for {
			if m := next(ws); m["id"] != nil {
				return m
			}
		}
	}
	// conns polls both nodes' gauges until they read want.
	conns := func(want [2]int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		var got [2]int
		for {
			got = [2]int{connections(t, a), connections(t, b)}
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("connections per node %v, want %v", got, want)
			}
			time.Sleep(20 * time.Millisecond) // polling /metrics
		}
	}

	sub := dial()
	r := call(sub, `{"id":1,"op":"subscribe","channel":"chat:x"}`)
	res, _ := r["result"].(map[string]any)
	if res == nil {
		t.Fatalf("subscribe: %v", r)
	}
	epoch, _ := res["epoch"].(string)
	var on, other *proc
	deadline = time.Now().Add(10 * time.Second)
	for on == nil {
		switch [2]int{connections(t, a), connections(t, b)} {
		case [2]int{1, 0}:
			on, other = a, b
		case [2]int{0, 1}:
			on, other = b, a
		default:
			if time.Now().After(deadline) {
				t.Fatalf("subscriber on no single node: %d %d", connections(t, a), connections(t, b))
			}
			time.Sleep(20 * time.Millisecond) // polling /metrics
		}
	}
	// The balancer spreads: the second connection goes to the other node,
	// so the publication below crosses Redis.
	pub := dial()
	conns([2]int{1, 1})
	if r := call(pub, `{"id":1,"op":"publish","channel":"chat:x","data":1}`); r["ok"] != true {
		t.Fatalf("publish: %v", r)
	}
	if m := next(sub); m["channel"] != "chat:x" || m["offset"] != float64(1) || m["data"] != float64(1) {
		t.Fatalf("cross-node push: %v", m)
	}

	// Drain the subscriber's node: it tells the client to go and exits.
	if err := on.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var sawDisconnect bool
	for {
		_, msg, err := sub.ReadMessage()
		if err != nil {
			if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
				t.Fatalf("subscriber after SIGTERM of its node: %v, want close 1001", err)
			}
			break
		}
		var m map[string]any
		_ = json.Unmarshal(msg, &m)
		if d, _ := m["disconnect"].(map[string]any); d != nil && d["code"] == float64(4001) {
			sawDisconnect = true
		}
	}
	if !sawDisconnect {
		t.Fatal("no disconnect 4001 before close 1001")
	}
	if _, err := on.waitExit(t, time.Now(), 10*time.Second); err != nil {
		t.Fatalf("drained node exit: %v, want 0", err)
	}
	for i := 2; i <= 3; i++ {
		if r := call(pub, fmt.Sprintf(`{"id":%d,"op":"publish","channel":"chat:x","data":%d}`, i, i)); r["ok"] != true {
			t.Fatalf("publish while the subscriber is away: %v", r)
		}
	}
	// The proxy must route around the stopped node on the first try.
	moved := dial()
	r = call(moved, `{"id":1,"op":"subscribe","channel":"chat:x","since":{"offset":1,"epoch":"`+epoch+`"}}`)
	res, _ = r["result"].(map[string]any)
	if res == nil || res["recovered"] != true {
		t.Fatalf("recovery through %s: %v", name, r)
	}
	pubs, _ := res["publications"].([]any)
	if len(pubs) != 2 {
		t.Fatalf("recovered %d publications, want 2: %v", len(pubs), r)
	}
	for i, p := range pubs {
		if m, _ := p.(map[string]any); m == nil || m["data"] != float64(i+2) {
			t.Fatalf("recovered publication %d: %v", i, p)
		}
	}
	if n := connections(t, other); n != 2 {
		t.Fatalf("surviving node has %d connections, want the publisher and the moved subscriber", n)
	}
}

func readyz(p *proc) int {
	resp, err := http.Get("http://" + p.admin + "/readyz")
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// connections reads the wsedge_connections gauge of a node.
func connections(t *testing.T, p *proc) int {
	t.Helper()
	resp, err := http.Get("http://" + p.admin + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, line := range strings.Split(string(body), "\n") {
		var n int
		if _, err := fmt.Sscanf(line, "wsedge_connections %d", &n); err == nil {
			return n
		}
	}
	t.Fatalf("/metrics lacks wsedge_connections:\n%s", body)
	return 0
}

// render reads a shipped configuration and replaces its placeholders,
// failing if one is missing so the test and the file cannot drift apart.
func render(t *testing.T, path string, repl ...string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for i := 0; i < len(repl); i += 2 {
		if !strings.Contains(text, repl[i]) {
			t.Fatalf("%s lacks the placeholder %q", path, repl[i])
		}
		text = strings.ReplaceAll(text, repl[i], repl[i+1])
	}
	return text
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// runProxy starts cmd in its own process group, killed whole at cleanup
// (nginx's workers outlive a killed master), and waits until addr accepts.
func runProxy(t *testing.T, cmd *exec.Cmd, addr string) {
	t.Helper()
	out := &lockedBuffer{} // browser_test.go
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(cmd.Path), out)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("%s exited: %v\n%s", filepath.Base(cmd.Path), err, out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not listening on %s after 10 s\n%s", filepath.Base(cmd.Path), addr, out)
		}
		time.Sleep(20 * time.Millisecond) // polling the proxy's listener
	}
}

func startNginx(t *testing.T, bin string, a, b *proc) string {
	dir := t.TempDir()
	port := freePort(t)
	site := render(t, "../../deploy/nginx/wsedge.conf",
		"127.0.0.1:8081", a.ws,
		"127.0.0.1:8082", b.ws,
		"listen 8080;", "listen 127.0.0.1:"+port+";")
	if err := os.WriteFile(filepath.Join(dir, "wsedge.conf"), []byte(site), 0o644); err != nil {
		t.Fatal(err)
	}
	// The shipped file is an http {} snippet; this is the rest of an
	// nginx.conf, every path in the test's directory.
	var main strings.Builder
	main.WriteString("worker_processes 1;\nevents { worker_connections 256; }\nhttp {\n    access_log off;\n")
	for _, temp := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&main, "    %s_temp_path %s;\n", temp, filepath.Join(dir, temp))
	}
	fmt.Fprintf(&main, "    include %s;\n}\n", filepath.Join(dir, "wsedge.conf"))
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(main.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-e", "stderr", "-p", dir, "-c", conf,
		"-g", "daemon off; pid "+filepath.Join(dir, "nginx.pid")+"; error_log stderr;")
	addr := "127.0.0.1:" + port
	runProxy(t, cmd, addr)
	return addr
}

func startHAProxy(t *testing.T, bin string, a, b *proc) string {
	dir := t.TempDir()
	port := freePort(t)
	cfg := render(t, "../../deploy/haproxy/wsedge.cfg",
		"127.0.0.1:8081", a.ws,
		"127.0.0.1:8082", b.ws,
		"check port 9091", "check port "+portOf(t, a.admin),
		"check port 9092", "check port "+portOf(t, b.admin),
		"bind :8080", "bind 127.0.0.1:"+port)
	file := filepath.Join(dir, "wsedge.cfg")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + port
	runProxy(t, exec.Command(bin, "-f", file, "-db"), addr)
	return addr
}
