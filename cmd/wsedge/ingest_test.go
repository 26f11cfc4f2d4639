package main

import (
	"context"
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

	"github.com/wsedge/wsedge/ingest"
)

// counter is a subscriber that counts the publications it receives by
// their payload {"n":N}.
type counter struct {
	mu   sync.Mutex
	seen map[int]int
	err  error
}

func subscribeCounter(t *testing.T, ws string, channel string, c *counter) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"wsedge.v1.json"}}
	conn, _, err := d.Dial("ws://"+ws+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"id":1,"op":"subscribe","channel":%q}`, channel)); err != nil {
		t.Fatal(err)
	}
	subscribed := make(chan struct{})
	go func() {
		for {
			_, b, err := conn.ReadMessage()
			if err != nil {
				return
			}
			var m struct {
				ID      int    `json:"id"`
				Channel string `json:"channel"`
				Data    struct {
					N *int `json:"n"`
				} `json:"data"`
			}
			if err := json.Unmarshal(b, &m); err != nil {
				c.mu.Lock()
				c.err = fmt.Errorf("bad push %q: %v", b, err)
				c.mu.Unlock()
				return
			}
			if m.ID == 1 {
				close(subscribed)
				continue
			}
			if m.Channel == channel && m.Data.N != nil {
				c.mu.Lock()
				c.seen[*m.Data.N]++
				c.mu.Unlock()
			}
		}
	}()
	select {
	case <-subscribed:
	case <-time.After(5 * time.Second):
		t.Fatal("no subscribe reply")
	}
	return conn
}

// TestIngestServerRestart publishes 100,000 messages through one
// ingest.Client while the server is stopped mid-stream and a new one
// started on the same socket path. Every message must be acked exactly once
// (or returned as an error: none is expected here), and with a graceful
// stop (SIGTERM) the subscribers of the two processes together receive
// every acked message exactly once. With SIGKILL the client's guarantee
// still holds; a publication the dead process made but could not ack is
// published again on the next process (the idempotency window lives in
// the process), which the test reports.
func TestIngestServerRestart(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) { testIngestRestart(t, sig) })
	}
}

func testIngestRestart(t *testing.T, sig syscall.Signal) {
	const n = 100000
	const channel = "bench:restart"
	dir := t.TempDir()
	sock := filepath.Join(dir, "ingest.sock")
	big := []string{"--max-outbound-messages", "1000000", "--max-outbound-bytes", "1000000000", "--drain-grace", "0"}
	a := startServe(t, "", append([]string{"--ingest", "unix://" + sock}, big...)...)
	seen := &counter{seen: map[int]int{}}
	subscribeCounter(t, a.ws, channel, seen)

	cl, err := ingest.Dial(t.Context(), "unix://"+sock, ingest.Options{RetryFor: time.Minute, MaxInFlight: 2000, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	calls := make([]*ingest.Call, n)
	third := make(chan *ingest.Call, 1) // the call the test stops the server after
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := range n {
			c, err := cl.PublishAsync(context.Background(), channel, fmt.Appendf(nil, `{"n":%d}`, i), nil)
			if err != nil {
				t.Errorf("PublishAsync %d: %v", i, err)
				return
			}
			calls[i] = c
			if i == n/3 {
				third <- c
			}
		}
	}()
	// Stop the server once a third is acked.
	select {
	case c := <-third:
		select {
		case <-c.Done:
		case <-time.After(20 * time.Second):
			t.Fatal("a third of the messages not acked in 20 s")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a third of the messages not sent in 20 s")
	}
	_ = a.cmd.Process.Signal(sig)
	select {
	case err := <-a.done:
		a.done <- err // for startServe's cleanup
	case <-time.After(15 * time.Second):
		t.Fatal("first server did not exit")
	}
	// The second server listens on another path first, so that its
	// subscriber is in place before the client can reach it; then its
	// socket takes the well-known path (rename is atomic).
	sock2 := filepath.Join(dir, "ingest2.sock")
	b := startServe(t, "", append([]string{"--ingest", "unix://" + sock2}, big...)...)
	subscribeCounter(t, b.ws, channel, seen)
	if err := os.Rename(sock2, sock); err != nil {
		t.Fatal(err)
	}
	<-sent
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := cl.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	acked, dupAcks := 0, 0
	for i, c := range calls {
		if c == nil {
			t.Fatalf("call %d never made", i)
		}
		select {
		case <-c.Done:
		default:
			t.Fatalf("call %d not answered", i)
		}
		if c.Err != nil {
			t.Errorf("call %d: %v", i, c.Err)
			continue
		}
		acked++
		if c.Duplicate {
			dupAcks++
		}
	}
	// Every acked message reaches the subscribers (the second
	// subscriber's pushes may still be on their way).
	var missing, twice []int
	checkForMain(t, 20*time.Second, func() error {
		seen.mu.Lock()
		defer seen.mu.Unlock()
		if seen.err != nil {
			t.Fatal(seen.err)
		}
		missing, twice = missing[:0], twice[:0]
		for i, c := range calls {
			switch k := seen.seen[i]; {
			case c.Err == nil && k == 0:
				missing = append(missing, i)
			case k > 1:
				twice = append(twice, i)
			}
		}
		if sig == syscall.SIGTERM && len(missing) > 0 {
			return fmt.Errorf("%d acked messages not received (first %d)", len(missing), missing[0])
		}
		return nil
	})
	t.Logf("%s: %d acked (%d answered from the idempotency window), %d received twice, %d acked but not received",
		sig, acked, dupAcks, len(twice), len(missing))
	if sig == syscall.SIGTERM && (len(twice) > 0 || len(missing) > 0) {
		t.Fatalf("graceful restart: %d received twice, %d missing", len(twice), len(missing))
	}
	if acked != n {
		t.Fatalf("%d of %d acked", acked, n)
	}
}

func checkForMain(t *testing.T, timeout time.Duration, fn func() error) {
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
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPublishCLI runs `wsedge publish` through the socket (argument and
// stdin lines) and through the HTTP API.
func TestPublishCLI(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ingest.sock")
	const key = "0123456789abcdef-test-key"
	startServe(t, "", "--ingest", "unix://"+sock)
	cmd := exec.Command(binPath, "publish", "--ingest", "unix://"+sock, "--channel", "chat:cli", `{"text":"hi"}`)
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "1" {
		t.Fatalf("publish arg: %q %v", out, err)
	}
	cmd = exec.Command(binPath, "publish", "--ingest", "unix://"+sock, "--channel", "chat:cli")
	cmd.Stdin = strings.NewReader("{\"a\":1}\n\n\"two\"\nnot json\n3\n")
	out, err = cmd.Output()
	if err == nil || strings.Fields(string(out)) == nil || strings.Join(strings.Fields(string(out)), ",") != "2,3,4" {
		t.Fatalf("publish stdin: %q %v (want offsets 2,3,4 and a failure for the bad line)", out, err)
	}

	sock2 := filepath.Join(t.TempDir(), "ingest.sock")
	q := startServeEnv(t, []string{"WSEDGE_API_KEY=" + key}, "--ingest", "unix://"+sock2)
	cmd = exec.Command(binPath, "publish", "--api", "http://"+q.admin, "--channel", "chat:cli", `"via http"`)
	cmd.Env = append(os.Environ(), "WSEDGE_API_KEY="+key)
	out, err = cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "1" {
		t.Fatalf("publish --api: %q %v", out, err)
	}
	cmd = exec.Command(binPath, "publish", "--api", "http://"+q.admin, "--api-key", "wrong-key-0123456789", "--channel", "chat:cli", `1`)
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "401") {
		t.Fatalf("wrong key: %q %v", out, err)
	}
	resp, err := http.Get("http://" + q.admin + "/api/channels")
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no key: %v %v", resp, err)
	}
	resp.Body.Close()
}

// startServeEnv is startServe with extra environment variables.
func startServeEnv(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return startServe(t, "", args...)
}

// TestBenchIngest runs `wsedge bench ingest` briefly over the socket and
// over the HTTP API against a real server; every publication must reach
// both subscribers.
func TestBenchIngest(t *testing.T) {
	const key = "bench-test-api-key-0123"
	sock := filepath.Join(t.TempDir(), "ingest.sock")
	p := startServeEnv(t, []string{"WSEDGE_API_KEY=" + key}, "--ingest", "unix://"+sock)
	for _, via := range [][]string{{"--socket", "unix://" + sock, "--rate", "2000"}, {"--api", "http://" + p.admin, "--rate", "200", "--window", "4"}} {
		args := append([]string{"bench", "ingest", "--url", "ws://" + p.ws + "/ws", "--subs", "2", "--duration", "1s"}, via...)
		out, err := exec.Command(binPath, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", via, err, out)
		}
		var acked, sent, errs, delivered, expected int
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "acked ") {
				fmt.Sscanf(line, "acked %d of %d sent in 1s (%d errors)", &acked, &sent, &errs)
			}
			if strings.HasPrefix(line, "delivered ") {
				fmt.Sscanf(line, "delivered %d of %d", &delivered, &expected)
			}
		}
		if acked == 0 || errs != 0 || delivered != expected || expected != 2*sent {
			t.Fatalf("%v: acked %d of %d, %d errors, delivered %d of %d\n%s", via, acked, sent, errs, delivered, expected, out)
		}
	}
}
