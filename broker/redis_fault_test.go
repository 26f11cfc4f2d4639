package broker_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsedge/wsedge/broker"
	"github.com/wsedge/wsedge/broker/redistest"
)

// callSlack is what a failing call may take beyond OpTimeout: scheduling
// on a loaded test machine, not a hang.
const callSlack = 500 * time.Millisecond

// SIGKILL under load: calls fail within their timeout and both nodes turn
// not ready; after a restart they resubscribe within 5 s, a position in
// the lost history recovers false under a new epoch, and cross-node
// delivery works again.
func TestRedisKillAndRestart(t *testing.T) {
	srv := redistest.Start(t)
	cfg := testRedisConfig(srv.URL())
	a, b := newRedis(t, cfg), newRedis(t, cfg)
	newCollector(a)
	cb := newCollector(b)
	ctx := context.Background()
	const ch = "kill:chat"
	if err := b.Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	waitReady(t, a, true, 5*time.Second)
	waitReady(t, b, true, 5*time.Second)
	old, err := a.Publish(ctx, ch, []byte("before"), keep)
	if err != nil {
		t.Fatal(err)
	}

	// Load: publishers that record how long each failing call took.
	var (
		stop     atomic.Bool
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures int
		slowest  time.Duration
	)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				start := time.Now()
				_, err := a.Publish(ctx, ch, []byte(strconv.Itoa(i)), keep)
				if err == nil {
					continue
				}
				d := time.Since(start)
				mu.Lock()
				failures++
				slowest = max(slowest, d)
				mu.Unlock()
				if !errors.Is(err, context.DeadlineExceeded) && d < time.Millisecond {
					time.Sleep(time.Millisecond) // refused at once: do not spin
				}
			}
		}()
	}
	checkFor(t, 5*time.Second, func() error {
		if n := len(cb.get(ch)); n < 50 {
			return fmt.Errorf("%d deliveries under load", n)
		}
		return nil
	})
	srv.Kill()
	waitReady(t, a, false, cfg.CanaryTimeout+callSlack)
	waitReady(t, b, false, cfg.CanaryTimeout+callSlack)
	checkFor(t, 5*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if failures < 20 {
			return fmt.Errorf("%d failed publishes while Redis is down", failures)
		}
		return nil
	})
	for name, call := range map[string]func() error{
		"History":       func() error { _, err := b.History(ctx, ch, broker.HistoryRequest{Limit: 1}); return err },
		"Subscribe":     func() error { return b.Subscribe(ctx, "kill:other") },
		"Presence":      func() error { _, err := b.Presence(ctx, ch); return err },
		"AddPresence":   func() error { return b.AddPresence(ctx, ch, broker.ClientInfo{ClientID: "c1"}) },
		"PresenceStats": func() error { _, err := b.PresenceStats(ctx, ch); return err },
	} {
		start := time.Now()
		if err := call(); err == nil {
			t.Fatalf("%s succeeded with Redis down", name)
		}
		if d := time.Since(start); d > cfg.OpTimeout+callSlack {
			t.Fatalf("%s took %v with Redis down, OpTimeout %v", name, d, cfg.OpTimeout)
		}
	}

	srv.Restart()
	restarted := time.Now()
	waitReady(t, a, true, 5*time.Second)
	waitReady(t, b, true, 5*time.Second)
	stop.Store(true)
	wg.Wait()
	mu.Lock()
	if slowest > cfg.OpTimeout+callSlack {
		t.Errorf("a publish failed after %v, OpTimeout %v", slowest, cfg.OpTimeout)
	}
	mu.Unlock()
	t.Logf("ready again %v after the restart; %+v", time.Since(restarted), b.Stats())

	res, err := b.History(ctx, ch, broker.HistoryRequest{Since: &old, Limit: broker.NoLimit})
	if err != nil {
		t.Fatal(err)
	}
	if res.Recovered || res.Position.Epoch == old.Epoch {
		t.Fatalf("recovery across a Redis restart: %+v, old position %+v; want Recovered false and a new epoch", res, old)
	}
	// The subscription made while Redis was down, and the old one, both
	// deliver again.
	for _, c := range []string{ch, "kill:other"} {
		before := len(cb.get(c))
		pos, err := a.Publish(ctx, c, []byte("after"), keep)
		if err != nil {
			t.Fatal(err)
		}
		checkFor(t, 5*time.Second, func() error {
			pubs := cb.get(c)
			if len(pubs) <= before || pubs[len(pubs)-1].Epoch != pos.Epoch || pubs[len(pubs)-1].Offset != pos.Offset {
				return fmt.Errorf("%s: publication %+v not delivered to the other node", c, pos)
			}
			return nil
		})
	}
}

// A pub/sub connection that goes silent while commands still work: the
// canary notices, Ready turns false, the shard is resubscribed on a new
// connection, and the publications made meanwhile are delivered from
// history, once each and in order.
func TestRedisWedgedPubSub(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.NewProxy(t, srv.Addr())
	cfg := testRedisConfig(proxy.URL())
	a := newRedis(t, cfg)                        // through the proxy
	b := newRedis(t, testRedisConfig(srv.URL())) // direct
	ca := newCollector(a)
	newCollector(b)
	ctx := context.Background()
	chs := []string{"wedge:1", "wedge:2", "wedge:3"}
	for _, ch := range chs {
		if err := a.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	waitReady(t, a, true, 5*time.Second)
	publish := func(n int) {
		for i := 0; i < n; i++ {
			for _, ch := range chs {
				if _, err := b.Publish(ctx, ch, []byte(strconv.Itoa(i)), keep); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	publish(5)
	if n := proxy.WedgePubSub(); n != cfg.Shards {
		t.Fatalf("wedged %d pub/sub connections, want %d", n, cfg.Shards)
	}
	publish(20)
	// Not ready from CanaryTimeout after the wedge until the resubscribed
	// canaries return; a loaded machine may poll past that window, but
	// then the forced resubscribe shows the canary saw it.
	checkFor(t, 2*cfg.CanaryTimeout, func() error {
		if a.Ready() && a.Stats().ForcedResubscribes == 0 {
			return fmt.Errorf("still ready with wedged pub/sub: %+v", a.Stats())
		}
		return nil
	})
	waitReady(t, a, true, 5*time.Second)
	if st := a.Stats(); st.ForcedResubscribes == 0 {
		t.Fatalf("ready again without a forced resubscribe: %+v", st)
	}
	publish(5)
	for _, ch := range chs {
		checkFor(t, 5*time.Second, func() error {
			if err := checkSequence(ca.get(ch), 30); err != nil {
				return fmt.Errorf("%s: %w", ch, err)
			}
			return nil
		})
	}
	st := a.Stats()
	if st.Refetched == 0 || st.Lost != 0 {
		t.Fatalf("stats after the wedge %+v, want refetched publications and none lost", st)
	}
	t.Logf("after the wedge: %+v", st)
}

// A network that silently drops everything: calls fail by their timeouts,
// Ready turns false, and all is well when the network is back.
func TestRedisNetworkStall(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.NewProxy(t, srv.Addr())
	cfg := testRedisConfig(proxy.URL())
	r := newRedis(t, cfg)
	c := newCollector(r)
	ctx := context.Background()
	if err := r.Subscribe(ctx, "stall"); err != nil {
		t.Fatal(err)
	}
	waitReady(t, r, true, 5*time.Second)
	proxy.Stall(true)
	start := time.Now()
	if _, err := r.Publish(ctx, "stall", []byte("lost"), keep); err == nil {
		t.Fatal("Publish succeeded through a stalled network")
	}
	if d := time.Since(start); d > cfg.OpTimeout+callSlack {
		t.Fatalf("Publish took %v on a stalled network, OpTimeout %v", d, cfg.OpTimeout)
	}
	waitReady(t, r, false, 2*cfg.CanaryTimeout)
	proxy.Stall(false)
	waitReady(t, r, true, 10*time.Second)
	pos, err := r.Publish(ctx, "stall", []byte("after"), keep)
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, func() error {
		pubs := c.get("stall")
		if len(pubs) == 0 || pubs[len(pubs)-1].Offset != pos.Offset {
			return fmt.Errorf("deliveries %+v, want the last at %+v", pubs, pos)
		}
		return nil
	})
}

// A node's presence entries live while it refreshes them, come back after
// Redis lost them, and leave within the TTL once the node is gone.
func TestRedisPresenceExpiry(t *testing.T) {
	srv := redistest.Start(t)
	cfg := testRedisConfig(srv.URL())
	cfg.PresenceTTL = time.Second
	cfg.PresenceRefresh = 200 * time.Millisecond
	a, b := newRedis(t, cfg), newRedis(t, cfg)
	ctx := context.Background()
	const ch = "presence:expiry"
	if err := a.AddPresence(ctx, ch, broker.ClientInfo{ClientID: "ca", UserID: "u1"}); err != nil {
		t.Fatal(err)
	}
	if err := b.AddPresence(ctx, ch, broker.ClientInfo{ClientID: "cb", UserID: "u2"}); err != nil {
		t.Fatal(err)
	}
	stats := func(want broker.PresenceStats) func() error {
		return func() error {
			got, err := b.PresenceStats(ctx, ch)
			if err != nil {
				return err
			}
			if got != want {
				return fmt.Errorf("stats %+v, want %+v", got, want)
			}
			return nil
		}
	}
	// Three TTLs later both are still there: the refresher kept them.
	deadline := time.Now().Add(3 * cfg.PresenceTTL)
	for time.Now().Before(deadline) {
		if err := stats(broker.PresenceStats{NumClients: 2, NumUsers: 2})(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not synchronisation
	}
	if _, err := srv.Do("FLUSHALL"); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 3*cfg.PresenceRefresh+callSlack, stats(broker.PresenceStats{NumClients: 2, NumUsers: 2}))
	a.Close() // a crash as far as presence goes: nothing removes "ca"
	checkFor(t, cfg.PresenceTTL+callSlack, stats(broker.PresenceStats{NumClients: 1, NumUsers: 1}))
	p, err := b.Presence(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p["cb"]; !ok || len(p) != 1 {
		t.Fatalf("presence %+v, want only cb", p)
	}
}

func TestRedisShardsMismatch(t *testing.T) {
	srv := redistest.Start(t)
	cfg := testRedisConfig(srv.URL())
	newRedis(t, cfg)
	cfg.Shards++
	_, err := broker.NewRedis(context.Background(), cfg)
	if !errors.Is(err, broker.ErrShardsMismatch) {
		t.Fatalf("NewRedis with other shards = %v, want ErrShardsMismatch", err)
	}
}

func TestRedisUnreachable(t *testing.T) {
	srv := redistest.Start(t)
	srv.Kill()
	cfg := testRedisConfig(srv.URL())
	start := time.Now()
	if _, err := broker.NewRedis(context.Background(), cfg); err == nil {
		t.Fatal("NewRedis succeeded without Redis")
	}
	if d := time.Since(start); d > cfg.OpTimeout+callSlack {
		t.Fatalf("NewRedis took %v without Redis", d)
	}
}
