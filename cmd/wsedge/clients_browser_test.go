package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsedge/wsedge/broker/redistest"
)

// browserEvent is one JSON line of testdata/browser/recover.js.
type browserEvent struct {
	Event   string          `json:"event"`
	From    string          `json:"from"`
	To      string          `json:"to"`
	Reason  string          `json:"reason"`
	Code    any             `json:"code"`
	Delay   float64         `json:"delay"`
	Channel string          `json:"channel"`
	Offset  uint64          `json:"offset"`
	Epoch   string          `json:"epoch"`
	Data    json.RawMessage `json:"data"`
	N       int             `json:"n"`
	State   string          `json:"state"`
	Message string          `json:"message"`
}

// browserLog gathers the page's events as they come.
type browserLog struct {
	mu     sync.Mutex
	events []browserEvent
}

func (l *browserLog) snapshot() []browserEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]browserEvent(nil), l.events...)
}

func (l *browserLog) count(keep func(browserEvent) bool) int {
	n := 0
	for _, e := range l.snapshot() {
		if keep(e) {
			n++
		}
	}
	return n
}

// pollUntil polls fn until it returns nil or the timeout passes.
func pollUntil(t *testing.T, timeout time.Duration, fn func() error) {
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

// TestBrowserClientRecovers runs client/js/wsedge.js in headless Chromium
// against two wsedge nodes sharing Redis. The page connects to node A with
// a token, subscribes, and receives what a publisher on node B publishes.
// Node A is killed (SIGKILL: no disconnect push, no close frame) and the
// page, now reconnecting with backoff, publishes five messages that wait in
// its offline queue; the publisher keeps going. Node A restarts on the same
// port: the page reconnects, recovers every publication it missed from the
// shared history, in order and once each, and its queued publishes go out
// in order and are acknowledged.
func TestBrowserClientRecovers(t *testing.T) {
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
	jsDir, err := filepath.Abs(filepath.Join("..", "..", "client", "js"))
	if err != nil {
		t.Fatal(err)
	}
	rs := redistest.Start(t)

	dir := t.TempDir()
	secret := writeSecret(t, filepath.Join(dir, "secret"))
	cfg := filepath.Join(dir, "wsedge.yaml")
	config := "namespaces:\n  - name: room\n    history_size: 10000\n    history_ttl: 5m\n    publish: true\n"
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	nodeArgs := []string{"--config", cfg, "--auth-secret-file", secret, "--broker", rs.URL(), "--command-rate", "0"}
	a := startServe(t, "", append([]string{"--listen", "127.0.0.1:" + port}, nodeArgs...)...)
	b := startServe(t, "", nodeArgs...)
	pageTok := mintToken(t, "--key", secret, "--sub", "page", "--channels", "room:*", "--publish", "room:*", "--ttl", "10m")
	backendTok := mintToken(t, "--key", secret, "--sub", "backend", "--publish", "room:*", "--ttl", "10m")

	// The page and the module come from a plain http server on 127.0.0.1
	// (Chromium refuses ws://127.0.0.1 from about:blank).
	mux := http.NewServeMux()
	mux.HandleFunc("/wsedge.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		http.ServeFile(w, r, filepath.Join(jsDir, "wsedge.js"))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, `<!doctype html><title>wsedge client test</title>
<script type="module">import * as wsedge from '/wsedge.js'; window.wsedge = wsedge;</script>`)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: mux}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "recover.js")
	cmd.Dir = script
	cmd.Env = append(os.Environ(),
		"PAGE_URL=http://"+ln.Addr().String()+"/",
		"WSEDGE_URL=ws://127.0.0.1:"+port+"/ws",
		"WSEDGE_TOKEN="+pageTok,
		"CHROMIUM="+chromium,
		"WSEDGE_STEP_TIMEOUT_MS=30000",
	)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	log := &browserLog{}
	exited := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ev browserEvent
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				ev = browserEvent{Event: "unreadable", Message: sc.Text()}
			}
			log.mu.Lock()
			log.events = append(log.events, ev)
			log.mu.Unlock()
		}
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cancel()
		<-exited
		if t.Failed() {
			t.Logf("recover.js stderr:\n%s", stderr.String())
		}
	})
	wait := func(what string, timeout time.Duration, ok func() bool) {
		t.Helper()
		pollUntil(t, timeout, func() error {
			if ok() {
				return nil
			}
			select {
			case err := <-exited:
				exited <- err
				return fmt.Errorf("recover.js exited (%v) before %s; stderr:\n%s", err, what, stderr.String())
			default:
			}
			return fmt.Errorf("%s: not yet; events: %d", what, len(log.snapshot()))
		})
	}
	is := func(event string) func(browserEvent) bool {
		return func(e browserEvent) bool { return e.Event == event }
	}
	feedPubs := func() int {
		return log.count(func(e browserEvent) bool { return e.Event == "pub" && e.Channel == "room:feed" })
	}
	state := func(to string) func(browserEvent) bool {
		return func(e browserEvent) bool { return e.Event == "state" && e.To == to }
	}
	start := time.Now()
	wait("page ready", 60*time.Second, func() bool { return log.count(is("ready")) == 1 })
	t.Logf("page subscribed after %v", time.Since(start).Round(time.Millisecond))

	// The publisher on node B: "1", "2", ... every 10 ms until stopped.
	d := websocket.Dialer{Subprotocols: []string{"wsedge.v1.json"}, HandshakeTimeout: 5 * time.Second}
	backend, _, err := d.Dial("ws://"+b.ws+"/ws", http.Header{"Authorization": {"Bearer " + backendTok}})
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	var published atomic.Int64
	stop := make(chan struct{})
	pubDone := make(chan error, 1)
	go func() {
		for i := 1; ; i++ {
			select {
			case <-stop:
				pubDone <- nil
				return
			default:
			}
			msg := fmt.Sprintf(`{"id":%d,"op":"publish","channel":"room:feed","data":%d}`, i, i)
			if err := backend.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
				pubDone <- err
				return
			}
			_ = backend.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, reply, err := backend.ReadMessage()
			if err != nil {
				pubDone <- err
				return
			}
			var r struct {
				ID uint64 `json:"id"`
				OK bool   `json:"ok"`
			}
			if json.Unmarshal(reply, &r) != nil || r.ID != uint64(i) || !r.OK {
				pubDone <- fmt.Errorf("publish %d: reply %s", i, reply)
				return
			}
			published.Store(int64(i))
			time.Sleep(10 * time.Millisecond) // the publisher's pace
		}
	}()
	stopPublisher := func() int {
		t.Helper()
		close(stop)
		if err := <-pubDone; err != nil {
			t.Fatalf("publisher: %v", err)
		}
		return int(published.Load())
	}

	wait("live publications", 20*time.Second, func() bool { return feedPubs() >= 20 })
	// Kill node A outright.
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	err = <-a.done
	a.done <- err
	atKill := published.Load()
	wait("page disconnected", 20*time.Second, func() bool { return log.count(state("disconnected")) >= 1 })
	if _, err := io.WriteString(stdin, "queue\n"); err != nil {
		t.Fatal(err)
	}
	wait("publishes queued", 20*time.Second, func() bool { return log.count(is("queued")) == 1 })
	// Down long enough for the page to retry (and fail) with backoff while
	// the publisher goes on.
	wait("retries while down", 20*time.Second, func() bool {
		return log.count(state("disconnected")) >= 3 && published.Load() >= atKill+50
	})
	startServe(t, "", append([]string{"--listen", "127.0.0.1:" + port}, nodeArgs...)...)
	wait("page reconnected", 30*time.Second, func() bool { return log.count(state("connected")) >= 2 })
	wait("queued publishes acknowledged", 30*time.Second, func() bool {
		return log.count(is("published"))+log.count(is("publish_failed")) == 5
	})
	after := published.Load()
	wait("publications after the restart", 20*time.Second, func() bool { return published.Load() >= after+20 })
	total := stopPublisher()
	wait("every publication", 30*time.Second, func() bool { return feedPubs() >= total })
	wait("own publications", 10*time.Second, func() bool {
		return log.count(func(e browserEvent) bool { return e.Event == "pub" && e.Channel == "room:own" }) >= 5
	})
	if _, err := io.WriteString(stdin, "close\n"); err != nil {
		t.Fatal(err)
	}
	wait("done", 20*time.Second, func() bool { return log.count(is("done")) == 1 })
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Fatalf("recover.js: %v\n%s", err, stderr.String())
		}
	case <-ctx.Done():
		t.Fatalf("recover.js did not exit: %v", ctx.Err())
	}

	events := log.snapshot()
	var feed, own []browserEvent
	var disconnects []browserEvent
	var acks []browserEvent
	for _, e := range events {
		switch {
		case e.Event == "pub" && e.Channel == "room:feed":
			feed = append(feed, e)
		case e.Event == "pub" && e.Channel == "room:own":
			own = append(own, e)
		case e.Event == "state" && e.To == "disconnected":
			disconnects = append(disconnects, e)
		case e.Event == "published":
			acks = append(acks, e)
		case e.Event == "publish_failed", e.Event == "unrecovered", e.Event == "unreadable":
			t.Fatalf("page event %+v", e)
		}
	}
	if len(feed) != total {
		t.Fatalf("page got %d publications, %d were published", len(feed), total)
	}
	for i, e := range feed {
		if string(e.Data) != strconv.Itoa(i+1) || (i > 0 && e.Offset != feed[i-1].Offset+1) || e.Epoch != feed[0].Epoch {
			t.Fatalf("publication %d: data %s offset %d epoch %s: lost, duplicated or out of order", i, e.Data, e.Offset, e.Epoch)
		}
	}
	for i, e := range own {
		if want := fmt.Sprintf(`{"n":%d}`, i+1); string(e.Data) != want {
			t.Fatalf("own publication %d is %s, want %s (the offline queue in order)", i, e.Data, want)
		}
	}
	if len(own) != 5 || len(acks) != 5 {
		t.Fatalf("%d own publications delivered, %d acknowledged, want 5 each", len(own), len(acks))
	}
	for _, e := range acks {
		if e.Offset != own[e.N-1].Offset {
			t.Fatalf("publish %d acknowledged at offset %d, delivered at %d", e.N, e.Offset, own[e.N-1].Offset)
		}
	}
	// The retries backed off: each wait under its ceiling (200 ms · 2^n,
	// at most 1 s), and the page queued while not connected.
	for i, e := range disconnects {
		if ceiling := min(200*float64(int(1)<<min(i, 10)), 1000); e.Delay < 0 || e.Delay > ceiling {
			t.Fatalf("disconnect %d waits %v ms, over its ceiling %v", i, e.Delay, ceiling)
		}
	}
	for _, e := range events {
		if e.Event == "queued" && e.State == "connected" {
			t.Fatal("the page was connected when it queued: the offline queue was not exercised")
		}
	}
	t.Logf("page recovered %d publications (%d published while node A was down), %d retries, in %v",
		total, int64(total)-atKill, len(disconnects), time.Since(start).Round(time.Millisecond))
}
