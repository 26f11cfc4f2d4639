package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
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

// pageEvent is one JSON line of testdata/browser/connect.js: what the page
// saw, in the order it saw it.
type pageEvent struct {
	Event    string          `json:"event"`
	Protocol string          `json:"protocol"`
	Channel  string          `json:"channel"`
	Offset   *uint64         `json:"offset"`
	Epoch    string          `json:"epoch"`
	Data     json.RawMessage `json:"data"`
	Code     int             `json:"code"`
	Opened   bool            `json:"opened"`
	Error    bool            `json:"error"`
	Raw      string          `json:"raw"`
}

// lockedBuffer collects the script's stderr, written by exec's copier and
// read by the test when it fails.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestBrowserPersonalChannel is the browser path of authentication: a page
// in headless Chromium connects with its token in the subprotocol list, is
// subscribed to its personal channel at connect, and receives what a backend
// publishes there; a page whose token is signed with another key never
// opens, and the server counts the refusal.
func TestBrowserPersonalChannel(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not found: the browser test needs Node.js and Debian's chromium (.ci/run installs both)")
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium not found: the browser test needs Debian's chromium (apt-get install chromium; .ci/run does)")
	}
	script, err := filepath.Abs(filepath.Join("testdata", "browser"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(script, "node_modules", "playwright-core")); err != nil {
		t.Fatalf("playwright-core is not installed: run `npm ci` in %s (.ci/run does): %v", script, err)
	}

	dir := t.TempDir()
	secret := writeSecret(t, filepath.Join(dir, "secret"))
	otherSecret := writeSecret(t, filepath.Join(dir, "other-secret"))
	// Clients may publish to "user" here only so that a backend connection
	// can reach alice's channel; its token still needs the publish pattern.
	cfg := filepath.Join(dir, "wsedge.yaml")
	config := "namespaces:\n  - name: user\n    history_size: 10\n    history_ttl: 1m\n    publish: true\n"
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, "", "--config", cfg, "--auth-secret-file", secret)

	personal := []string{"--sub", "alice", "--channels", "user:{sub}", "--subs", "user:{sub}", "--ttl", "10m"}
	aliceTok := mintToken(t, append([]string{"--key", secret}, personal...)...)
	forgedTok := mintToken(t, append([]string{"--key", otherSecret}, personal...)...)
	backendTok := mintToken(t, "--key", secret, "--sub", "backend", "--publish", "user:*", "--ttl", "10m")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "connect.js")
	cmd.Dir = script
	cmd.Env = append(os.Environ(),
		"WSEDGE_URL=ws://"+p.ws+"/ws",
		"WSEDGE_TOKEN="+aliceTok,
		"WSEDGE_BAD_TOKEN="+forgedTok,
		"CHROMIUM="+chromium,
		"WSEDGE_STEP_TIMEOUT_MS=30000",
	)
	// On a timeout, SIGTERM lets playwright close the browser it started in
	// a process group of its own; were node killed outright, Chromium would
	// still exit once its DevTools pipe closed, only later.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	events := make(chan pageEvent, 16)
	exited := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ev pageEvent
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				ev = pageEvent{Event: "unreadable", Raw: sc.Text()}
			}
			events <- ev
		}
		close(events)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cancel()
		for range events {
		}
		<-exited
	})
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf(format+"\nconnect.js stderr:\n%s", append(args, stderr.String())...)
	}
	next := func(want string) pageEvent {
		t.Helper()
		var ev pageEvent
		ok := true
		select {
		case ev, ok = <-events:
		case <-ctx.Done():
			fail("no %q from the page: %v", want, ctx.Err())
		}
		if !ok {
			fail("the page ended before %q", want)
		}
		if ev.Event != want {
			fail("page event %+v, want %q", ev, want)
		}
		return ev
	}

	if ev := next("open"); ev.Protocol != "wsedge.v1.json" {
		fail("ws.protocol %q, want wsedge.v1.json alone (the token entry is never echoed)", ev.Protocol)
	}
	ev := next("subscribed")
	if ev.Channel != "user:alice" || ev.Offset == nil || *ev.Offset != 0 || ev.Epoch == "" {
		fail("subscribed push %+v, want user:alice at offset 0 with an epoch", ev)
	}
	t.Logf("browser up and subscribed after %v", time.Since(start).Round(time.Millisecond))

	// Bob's publication comes first on the same backend connection: were
	// alice given channels her token does not name, it would be the first
	// publication her page reports.
	backend := dialBackend(t, p.ws, backendTok)
	publish(t, backend, 1, "user:bob", `{"text":"for bob"}`)
	publish(t, backend, 2, "user:alice", `{"text":"hello alice"}`)

	ev = next("publication")
	if ev.Channel != "user:alice" || ev.Offset == nil || *ev.Offset != 1 || string(ev.Data) != `{"text":"hello alice"}` {
		fail("publication %+v (data %s), want user:alice offset 1 {\"text\":\"hello alice\"}", ev, ev.Data)
	}
	if ev := next("close"); ev.Code != 1000 {
		fail("close %+v, want 1000 from the page", ev)
	}
	if ev := next("refused"); ev.Opened || !ev.Error || ev.Code != 1006 {
		fail("forged token: %+v, want an error and close 1006 without opening", ev)
	}
	next("done")
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			fail("connect.js: %v", err)
		}
	case <-ctx.Done():
		fail("connect.js did not exit: %v", ctx.Err())
	}
	t.Logf("browser run took %v", time.Since(start).Round(time.Millisecond))

	// The refusal is counted before the 401 goes out, but poll rather than
	// rely on that ordering.
	const series = `wsedge_auth_refused_total{reason="bad_signature"}`
	deadline := time.Now().Add(5 * time.Second)
	for v := metricValue(t, p.admin, series); v != 1; v = metricValue(t, p.admin, series) {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want 1", series, v)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writeSecret writes 48 random bytes as an HS256 secret file.
func writeSecret(t *testing.T, path string) string {
	t.Helper()
	b := make([]byte, 48)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func mintToken(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(binPath, append([]string{"token"}, args...)...).Output()
	if err != nil {
		t.Fatalf("wsedge token %v: %v", args, err)
	}
	return strings.TrimSpace(string(out))
}

// dialBackend connects the way a server-side client does, with the token in
// the Authorization header.
func dialBackend(t *testing.T, addr, tok string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"wsedge.v1.json"}, HandshakeTimeout: 5 * time.Second}
	ws, resp, err := d.Dial("ws://"+addr+"/ws", http.Header{"Authorization": {"Bearer " + tok}})
	if err != nil {
		t.Fatalf("backend dial: %v %v", resp, err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

// publish sends one publish command and waits for its success reply.
func publish(t *testing.T, ws *websocket.Conn, id int, channel, data string) {
	t.Helper()
	cmd := fmt.Sprintf(`{"id":%d,"op":"publish","channel":%q,"data":%s}`, id, channel, data)
	if err := ws.WriteMessage(websocket.TextMessage, []byte(cmd)); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, msg, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("publish to %s: %v", channel, err)
	}
	var reply struct {
		ID uint64 `json:"id"`
		OK bool   `json:"ok"`
	}
	if err := json.Unmarshal(msg, &reply); err != nil || reply.ID != uint64(id) || !reply.OK {
		t.Fatalf("publish to %s: reply %s, want ok for id %d", channel, msg, id)
	}
}
