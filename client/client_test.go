package client

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsedge/wsedge/broker/redistest"
	"github.com/wsedge/wsedge/engine"
)

// fastBackoff keeps reconnect waits short in tests.
var fastBackoff = Backoff{Min: 20 * time.Millisecond, Max: 300 * time.Millisecond, Factor: 2}

func dialT(t *testing.T, url string, opts ...Option) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, url, opts...)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	return c
}

// publisher publishes "1", "2", ... on ch from its own connection, one
// after the other, until stop; published counts the acknowledged ones.
// A publish the connection lost is published again: the application's
// choice (the test's data tells a duplicate apart, the handler must never
// see one twice anyway because it is one offset).
type publisher struct {
	published atomic.Int64
	stop      chan struct{}
	done      chan error
}

func startPublisher(t *testing.T, c *Client, ch string, max int, pace time.Duration) *publisher {
	p := &publisher{stop: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		for i := 1; i <= max; i++ {
			select {
			case <-p.stop:
				p.done <- nil
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := c.Publish(ctx, ch, []byte(strconv.Itoa(i)))
			cancel()
			if err != nil {
				p.done <- fmt.Errorf("publish %d: %w", i, err)
				return
			}
			p.published.Store(int64(i))
			if pace > 0 {
				time.Sleep(pace) // the publisher's rate, not synchronisation
			}
		}
		p.done <- nil
	}()
	return p
}

func (p *publisher) finish(t *testing.T) int {
	t.Helper()
	close(p.stop)
	if err := <-p.done; err != nil {
		t.Fatal(err)
	}
	return int(p.published.Load())
}

// TestFaultyPath: a subscriber behind a proxy that cuts, stalls and delays
// its connection, while a publisher on a direct connection keeps
// publishing, gets every publication exactly once and in order; it
// reconnected after each cut and after the stall (found by its read
// timeout), and leaves no goroutine after Close.
func TestFaultyPath(t *testing.T) {
	srv := startTestServer(t, nil)
	px := startProxy(t, srv.cfg.Listen)
	rec := &recorder{}
	sub := dialT(t, "ws://"+px.Addr()+"/ws", WithBackoff(fastBackoff), WithHealthyAfter(time.Hour),
		WithReadTimeout(1500*time.Millisecond), WithStateHandler(rec.onState))
	ch := testNamespace + ":faults"
	ctx := context.Background()
	if _, err := sub.Subscribe(ctx, ch, rec.onPub, OnUnrecovered(rec.onUnrecovered)); err != nil {
		t.Fatal(err)
	}
	pc := dialT(t, srv.URL())
	pub := startPublisher(t, pc, ch, 1_000_000, 2*time.Millisecond)

	waitMore := func(what string) {
		t.Helper()
		n := rec.count()
		checkFor(t, 10*time.Second, func() error {
			if rec.count() < n+20 {
				return fmt.Errorf("%s: no progress past %d publications", what, n)
			}
			return nil
		})
	}
	waitConnects := func(want int) {
		t.Helper()
		checkFor(t, 10*time.Second, func() error {
			if n := rec.connects(); n < want {
				return fmt.Errorf("%d connections, want %d", n, want)
			}
			return nil
		})
	}
	waitMore("before faults")
	for i := 0; i < 3; i++ {
		px.Cut()
		waitConnects(2 + i)
		waitMore("after a cut")
	}
	// A stall: the socket stays open but nothing flows; only the
	// client's read timeout can tell.
	px.Stall()
	n := rec.connects()
	checkFor(t, 10*time.Second, func() error {
		sub.mu.Lock()
		defer sub.mu.Unlock()
		if sub.state == StateConnected && rec.connects() == n {
			return errors.New("still connected through the stall")
		}
		return nil
	})
	px.Resume()
	waitConnects(n + 1)
	waitMore("after the stall")
	// Latency on the path: slower, nothing lost.
	px.Delay(30 * time.Millisecond)
	waitMore("with delay")
	px.Cut()
	waitMore("after a cut with delay")
	px.Delay(0)

	total := pub.finish(t)
	checkFor(t, 15*time.Second, func() error {
		if got := rec.count(); got < total {
			return fmt.Errorf("%d of %d publications delivered", got, total)
		}
		return nil
	})
	rec.checkSequence(t, total)
	t.Logf("%d publications through %d connections", total, rec.connects())
	sub.Close()
	pc.Close()
	if s := sub.State(); s != StateClosed {
		t.Fatalf("state after Close: %v", s)
	}
	assertNoGoroutines(t)
}

// TestServerRestart: two nodes share Redis; the subscriber's node drains
// and restarts on the same port while a publisher on the other node keeps
// publishing and the subscriber itself publishes while it is away. The
// subscriber waits at least the delay the drain named, reconnects,
// recovers every missed publication in order from the shared history,
// and its offline queue goes out in order once it is back.
func TestServerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server")
	}
	rs := redistest.Start(t)
	mutate := func(c *engine.Config) {
		c.Broker = rs.URL()
		c.DrainReconnectWindow = 400 * time.Millisecond
	}
	a := startTestServer(t, mutate)
	b := startTestServer(t, mutate)
	rec := &recorder{}
	sub := dialT(t, a.URL(), WithBackoff(fastBackoff), WithStateHandler(rec.onState), WithOfflineQueue(50))
	ch := testNamespace + ":restart"
	own := testNamespace + ":own"
	ctx := context.Background()
	if _, err := sub.Subscribe(ctx, ch, rec.onPub, OnUnrecovered(rec.onUnrecovered)); err != nil {
		t.Fatal(err)
	}
	ownRec := &recorder{}
	if _, err := sub.Subscribe(ctx, own, ownRec.onPub, OnUnrecovered(ownRec.onUnrecovered)); err != nil {
		t.Fatal(err)
	}
	pc := dialT(t, b.URL())
	pub := startPublisher(t, pc, ch, 1_000_000, 2*time.Millisecond)
	checkFor(t, 10*time.Second, func() error {
		if rec.count() < 50 {
			return fmt.Errorf("%d publications before the restart", rec.count())
		}
		return nil
	})

	a.Stop()
	atStop := pub.published.Load()
	checkFor(t, 5*time.Second, func() error {
		if s := sub.State(); s == StateConnected {
			return errors.New("still connected to the stopped node")
		}
		return nil
	})
	// Offline: these wait in the queue and must go out in order.
	const queued = 20
	results := make(chan error, queued)
	positions := make([]Position, queued)
	for i := range queued {
		// Each Publish blocks until acknowledged; issue them in order from
		// one goroutine each, started in order once the previous is queued.
		go func() {
			p, err := sub.Publish(ctx, own, []byte(strconv.Itoa(i+1)))
			positions[i] = p
			results <- err
		}()
		checkFor(t, 2*time.Second, func() error {
			sub.mu.Lock()
			defer sub.mu.Unlock()
			if len(sub.queue) != i+1 {
				return fmt.Errorf("queue holds %d, want %d", len(sub.queue), i+1)
			}
			return nil
		})
	}
	checkFor(t, 5*time.Second, func() error {
		if pub.published.Load() < atStop+100 {
			return errors.New("the publisher is not publishing while the node is down")
		}
		return nil
	})
	a.Start()
	for range queued {
		if err := <-results; err != nil {
			t.Fatalf("queued publish: %v", err)
		}
	}
	for i := 1; i < queued; i++ {
		if positions[i].Offset != positions[i-1].Offset+1 || positions[i].Epoch != positions[0].Epoch {
			t.Fatalf("queued publishes acknowledged at %v: not in order", positions)
		}
	}
	total := pub.finish(t)
	checkFor(t, 15*time.Second, func() error {
		if got, own := rec.count(), ownRec.count(); got < total || own < queued {
			return fmt.Errorf("%d of %d publications, %d of %d own", got, total, own, queued)
		}
		return nil
	})
	rec.checkSequence(t, total)
	ownRec.checkSequence(t, queued)

	// The drain named a delay and the client waited at least that long.
	rec.mu.Lock()
	var named bool
	for _, ev := range rec.states {
		var d *DisconnectError
		if ev.To == StateDisconnected && errors.As(ev.Err, &d) && d.Code == 4001 {
			named = true
			if d.Delay <= 0 || d.Delay > 400*time.Millisecond || ev.Delay < d.Delay {
				t.Errorf("drain delay %v, client waits %v: want 0 < delay <= 400ms and a wait no shorter", d.Delay, ev.Delay)
			}
		}
	}
	rec.mu.Unlock()
	if !named {
		t.Fatal("no disconnect 4001 among the state changes")
	}
	sub.Close()
	pc.Close()
	assertNoGoroutines(t)
}
