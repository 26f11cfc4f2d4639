package engine

import (
	"bytes"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/wsedge/wsedge/frame"
)

// handoffPair starts an old server serving a handoff socket and returns it
// with a function that starts the new server taking over; the new one's
// Takeover.Run result arrives on the returned channel.
type takeResult struct {
	n   int
	err error
}

func startOld(t *testing.T, mutate func(*Config)) (*Server, string, chan struct{}) {
	t.Helper()
	old := startServer(t, mutate)
	path := filepath.Join(t.TempDir(), "handoff.sock")
	done := make(chan struct{})
	ln, err := old.ServeHandoff(path, func() { close(done) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return old, path, done
}

func startNew(t *testing.T, old *Server, path string, mutate func(*Config)) (*Server, chan takeResult) {
	t.Helper()
	res := make(chan takeResult, 1)
	var tk *Takeover
	s := startServerHook(t, func(c *Config) {
		if mutate != nil {
			mutate(c)
		}
		c.Listen = old.Addr()
	}, func(s *Server) {
		var err error
		if tk, err = s.DialTakeover(path); err != nil {
			t.Fatal(err)
		}
	})
	go func() {
		n, err := tk.Run()
		res <- takeResult{n, err}
	}()
	return s, res
}

func waitTake(t *testing.T, res chan takeResult) takeResult {
	t.Helper()
	select {
	case r := <-res:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("takeover did not end")
	}
	return takeResult{}
}

// TestHandoffEcho hands echo connections over, some in the middle of a
// fragmented message and of a frame: each client then finishes its
// message and gets it back whole from the new process, and sees nothing
// else (no close, no ping).
func TestHandoffEcho(t *testing.T) {
	old, path, done := startOld(t, nil)
	const n = 60
	msg := bytes.Repeat([]byte("0123456789"), 20)
	clients := make([]*rawClient, n)
	var rest [][]byte
	for i := range clients {
		c := handshake(t, old.Addr())
		clients[i] = c
		var wire []byte
		switch i % 3 {
		case 0: // whole messages only
		case 1: // a fragmented message half received
			wire = append(masked(false, frame.OpText, msg[:50]), masked(true, frame.OpContinuation, msg[50:])...)
		case 2: // one frame cut in its payload
			wire = masked(true, frame.OpBinary, msg)
		}
		cut := len(wire) * 2 / 3
		c.send(wire[:cut])
		rest = append(rest, wire[cut:])
	}
	// Every cut message is in the server before the handoff starts.
	checkFor(t, 5*time.Second, func() error {
		old.metricsFlushed()
		if got := old.m.BytesIn.Get(); got < uint64(n/3*2*len(msg)*2/3) {
			return fmt.Errorf("%d bytes in", got)
		}
		return nil
	})
	neu, res := startNew(t, old, path, nil)
	r := waitTake(t, res)
	if r.err != nil || r.n != n {
		t.Fatalf("took %d of %d: %v", r.n, n, r.err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the old process did not finish")
	}
	if old.m.Open() != 0 || neu.m.Open() != n {
		t.Fatalf("open: old %d new %d", old.m.Open(), neu.m.Open())
	}
	for i, c := range clients {
		c.send(rest[i])
		switch i % 3 {
		case 1:
			c.expectFrame(frame.OpText, string(msg))
		case 2:
			c.expectFrame(frame.OpBinary, string(msg))
		}
		c.send(masked(true, frame.OpText, []byte(fmt.Sprint("after ", i))))
		c.expectFrame(frame.OpText, fmt.Sprint("after ", i))
	}
	// New connections reach the new process only.
	c := handshake(t, old.Addr())
	c.send(masked(true, frame.OpText, []byte("new")))
	c.expectFrame(frame.OpText, "new")
	if neu.m.Open() != n+1 {
		t.Fatalf("new process holds %d", neu.m.Open())
	}
	_ = runtime.NumGoroutine
}
