package engine

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsedge/wsedge/ingest"
)

// cuttingProxy forwards unix-socket connections to target and cuts each
// one (both directions, at once) after it has forwarded a random amount
// of responses: requests the server handled lose their acks, as when a
// connection breaks.
type cuttingProxy struct {
	ln    net.Listener
	cuts  atomic.Int64
	wg    sync.WaitGroup
	every int64
}

func startCuttingProxy(t *testing.T, target string, every int64) *cuttingProxy {
	t.Helper()
	path := filepath.Join(t.TempDir(), "proxy.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	p := &cuttingProxy{ln: ln, every: every}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("unix", target)
			if err != nil {
				c.Close()
				continue
			}
			p.wg.Add(2)
			go func() { defer p.wg.Done(); _, _ = io.Copy(s, c); s.Close() }()
			go func() {
				defer p.wg.Done()
				// Responses: forward about `every` bytes, then cut.
				_, _ = io.CopyN(c, s, p.every+int64(time.Now().UnixNano()%p.every))
				p.cuts.Add(1)
				c.Close()
				s.Close()
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

// TestClientRetriesExactlyOnce: 20,000 publishes through a connection
// that is cut again and again. Every publish is acked exactly once, some
// of them from the server's idempotency window (their first ack was cut
// off), and the subscriber receives each exactly once.
func TestClientRetriesExactlyOnce(t *testing.T) {
	s, addr := startIngestServer(t, func(c *Config) {
		c.MaxOutboundMessages = 1 << 20
		c.MaxOutboundBytes = 1 << 30
	})
	sub := dialProto(t, s.Addr())
	sub.ok(`{"op":"subscribe","channel":"chat:retry"}`)
	p := startCuttingProxy(t, addr[len("unix://"):], 16<<10)
	cl, err := ingest.Dial(t.Context(), "unix://"+p.ln.Addr().String(), ingest.Options{RetryFor: time.Minute, MaxInFlight: 1000, MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	n := 20000
	if raceEnabled {
		n = 5000
	}
	calls := make([]*ingest.Call, n)
	for i := range n {
		if calls[i], err = cl.PublishAsync(t.Context(), "chat:retry", fmt.Appendf(nil, `%d`, i), nil); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	dups := 0
	offsets := make(map[uint64]bool, n)
	for i, c := range calls {
		if c.Err != nil {
			t.Fatalf("call %d: %v", i, c.Err)
		}
		if offsets[c.Offset] {
			t.Fatalf("offset %d acked twice", c.Offset)
		}
		offsets[c.Offset] = true
		if c.Duplicate {
			dups++
		}
	}
	if p.cuts.Load() < 2 || dups == 0 {
		t.Fatalf("%d cuts, %d acks from the idempotency window: the test did not exercise retries", p.cuts.Load(), dups)
	}
	// History is 100 (chat): the pushes are the check.
	got := map[float64]int{}
	checkFor(t, 20*time.Second, func() error {
		sub.mu.Lock()
		defer sub.mu.Unlock()
		clear(got)
		for _, m := range sub.pushes {
			if m["channel"] == "chat:retry" {
				got[m["data"].(float64)]++
			}
		}
		if len(got) < n {
			return fmt.Errorf("%d of %d distinct publications received", len(got), n)
		}
		return nil
	})
	for v, k := range got {
		if k != 1 {
			t.Fatalf("publication %v received %d times", v, k)
		}
	}
	t.Logf("%d publishes, %d connection cuts, %d answered from the idempotency window", n, p.cuts.Load(), dups)
}
