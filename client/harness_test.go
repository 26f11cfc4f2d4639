package client

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsedge/wsedge/engine"
)

// server is an in-process wsedge on 127.0.0.1 that a test can stop and
// start again on the same port.
type server struct {
	t      testing.TB
	cfg    engine.Config
	mu     sync.Mutex
	s      *engine.Server
	cancel context.CancelFunc
	done   chan error
}

// testNamespace keeps a long history and takes client publishes.
const testNamespace = "t"

func startTestServer(t testing.TB, mutate func(*engine.Config)) *server {
	t.Helper()
	cfg := engine.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Admin = ""
	cfg.InsecureNoAuth = true
	cfg.CommandRate = 0
	cfg.DrainGrace = 0
	cfg.DrainReconnectWindow = 0
	cfg.PingInterval = time.Second
	cfg.IdleTimeout = 5 * time.Second
	cfg.Namespaces = append(cfg.Namespaces, engine.Namespace{Name: testNamespace, HistorySize: 100000, HistoryTTL: 5 * time.Minute, Publish: true})
	if mutate != nil {
		mutate(&cfg)
	}
	srv := &server{t: t, cfg: cfg}
	srv.Start()
	t.Cleanup(srv.Stop)
	return srv
}

// Start runs the server (again, on the port of its first run).
func (srv *server) Start() {
	srv.t.Helper()
	s, err := engine.New(srv.cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		srv.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	srv.cfg.Listen = s.Addr()
	srv.mu.Lock()
	srv.s, srv.cancel, srv.done = s, cancel, done
	srv.mu.Unlock()
}

// Stop drains and stops the server (a rolling restart's first half).
func (srv *server) Stop() {
	srv.mu.Lock()
	cancel, done := srv.cancel, srv.done
	srv.cancel, srv.done = nil, nil
	srv.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			srv.t.Errorf("server: %v", err)
		}
	case <-time.After(20 * time.Second):
		srv.t.Errorf("server did not stop")
	}
}

func (srv *server) URL() string { return "ws://" + srv.cfg.Listen + "/ws" }

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

// clientGoroutines lists the goroutines running this package's code
// (the test's own functions excluded).
func clientGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "wsedge/client.(*") && !strings.Contains(g, "_test.go") {
			out = append(out, g)
		}
	}
	return out
}

// assertNoGoroutines fails unless every goroutine of the client is gone:
// Close waits for them, so one still there after a short grace (a
// goroutine that has closed its done channel may still be returning) is
// a leak.
func assertNoGoroutines(t testing.TB) {
	t.Helper()
	checkFor(t, 2*time.Second, func() error {
		if g := clientGoroutines(); len(g) > 0 {
			return fmt.Errorf("%d client goroutines left after Close:\n%s", len(g), strings.Join(g, "\n\n"))
		}
		return nil
	})
}

// recorder collects what a subscription's handler and the state handler saw.
type recorder struct {
	mu          sync.Mutex
	pubs        []Publication
	states      []StateChange
	unrecovered []Position
}

func (r *recorder) onPub(p Publication) {
	r.mu.Lock()
	r.pubs = append(r.pubs, p)
	r.mu.Unlock()
}

func (r *recorder) onState(ev StateChange) {
	r.mu.Lock()
	r.states = append(r.states, ev)
	r.mu.Unlock()
}

func (r *recorder) onUnrecovered(p Position) {
	r.mu.Lock()
	r.unrecovered = append(r.unrecovered, p)
	r.mu.Unlock()
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pubs)
}

func (r *recorder) connects() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.states {
		if s.To == StateConnected {
			n++
		}
	}
	return n
}

// checkSequence asserts that the handler got data 1..n exactly once each,
// in order, with offsets increasing by one.
func (r *recorder) checkSequence(t testing.TB, n int) {
	t.Helper()
	r.checkSequenceData(t, n)
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, p := range r.pubs {
		if i > 0 && p.Offset != r.pubs[i-1].Offset+1 {
			t.Fatalf("publication %d offset %d after %d", i, p.Offset, r.pubs[i-1].Offset)
		}
	}
	if len(r.unrecovered) > 0 {
		t.Fatalf("recovery failed %d times: %v", len(r.unrecovered), r.unrecovered)
	}
}

// checkSequenceData asserts that the handler got data 1..n exactly once
// each, in order, whatever their offsets.
func (r *recorder) checkSequenceData(t testing.TB, n int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pubs) != n {
		t.Fatalf("handler got %d publications, want %d", len(r.pubs), n)
	}
	for i, p := range r.pubs {
		if want := fmt.Sprint(i + 1); string(p.Data) != want {
			t.Fatalf("publication %d is %s (offset %d), want %s: lost, reordered or duplicated", i, p.Data, p.Offset, want)
		}
	}
}
