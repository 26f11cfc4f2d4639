package broker_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsedge/wsedge/broker"
	"github.com/wsedge/wsedge/broker/brokertest"
	"github.com/wsedge/wsedge/broker/redistest"
)

// testRedisConfig is quick to notice faults, so the fault tests run in
// seconds.
func testRedisConfig(url string) broker.RedisConfig {
	return broker.RedisConfig{
		URL:            url,
		Shards:         4,
		OpTimeout:      time.Second,
		DialTimeout:    300 * time.Millisecond,
		ReadTimeout:    500 * time.Millisecond,
		WriteTimeout:   500 * time.Millisecond,
		CanaryInterval: 100 * time.Millisecond,
		CanaryTimeout:  600 * time.Millisecond,
		ReconnectMin:   20 * time.Millisecond,
		ReconnectMax:   300 * time.Millisecond,
	}
}

// newRedis connects a broker to the test's Redis. The quick timeouts of
// testRedisConfig can expire on a loaded machine while the test's own
// Redis is up, so a failed connection is tried again for 5 s.
func newRedis(t testing.TB, cfg broker.RedisConfig) *broker.Redis {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := broker.NewRedis(ctx, cfg)
		cancel()
		if err == nil {
			t.Cleanup(func() { r.Close() })
			return r
		}
		if errors.Is(err, broker.ErrShardsMismatch) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
}

// checkFor polls cond until it returns nil, failing with its last error
// after timeout.
func checkFor(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
}

func waitReady(t testing.TB, r *broker.Redis, want bool, timeout time.Duration) {
	t.Helper()
	checkFor(t, timeout, func() error {
		if r.Ready() != want {
			return fmt.Errorf("Ready() = %v, want %v; %+v", !want, want, r.Stats())
		}
		return nil
	})
}

func TestRedisConformance(t *testing.T) {
	srv := redistest.Start(t)
	for _, mode := range []string{broker.PubSubSharded, broker.PubSubClassic} {
		t.Run(mode, func(t *testing.T) {
			cfg := testRedisConfig(srv.URL())
			cfg.PubSub = mode
			cfg.KeyPrefix = "conf-" + mode // the two flavours do not meet
			brokertest.Run(t, func(t *testing.T) broker.Broker { return newRedis(t, cfg) })
		})
	}
}

func TestRedisPresenceConformance(t *testing.T) {
	srv := redistest.Start(t)
	brokertest.RunPresence(t, func(t *testing.T) broker.PresenceManager {
		return newRedis(t, testRedisConfig(srv.URL()))
	})
}

// collector records handler calls per channel for the Redis tests.
type collector struct {
	mu   sync.Mutex
	pubs map[string][]broker.Publication
}

func newCollector(b broker.Broker) *collector {
	c := &collector{pubs: make(map[string][]broker.Publication)}
	b.SetHandler(func(ch string, p broker.Publication) {
		c.mu.Lock()
		c.pubs[ch] = append(c.pubs[ch], p)
		c.mu.Unlock()
	})
	return c
}

func (c *collector) get(ch string) []broker.Publication {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]broker.Publication(nil), c.pubs[ch]...)
}

// checkSequence asserts that pubs are offsets 1..n of one epoch, once each
// and in order.
func checkSequence(pubs []broker.Publication, n int) error {
	if len(pubs) != n {
		return fmt.Errorf("%d deliveries, want %d", len(pubs), n)
	}
	for i, p := range pubs {
		if p.Offset != uint64(i+1) || p.Epoch != pubs[0].Epoch {
			return fmt.Errorf("delivery %d is {%d %s}, want {%d %s}", i, p.Offset, p.Epoch, i+1, pubs[0].Epoch)
		}
	}
	return nil
}

var keep = broker.PublishOptions{HistorySize: 1000, HistoryTTL: time.Minute}

// Two nodes on one Redis each deliver every publication of both, once
// and in offset order.
func TestRedisTwoNodes(t *testing.T) {
	srv := redistest.Start(t)
	cfg := testRedisConfig(srv.URL())
	a, b := newRedis(t, cfg), newRedis(t, cfg)
	ca, cb := newCollector(a), newCollector(b)
	ctx := context.Background()
	chs := []string{"two:a", "two:b", "two:c"}
	for _, ch := range chs {
		for _, n := range []*broker.Redis{a, b} {
			if err := n.Subscribe(ctx, ch); err != nil {
				t.Fatal(err)
			}
		}
	}
	const each = 100
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for _, n := range []*broker.Redis{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				for _, ch := range chs {
					if _, err := n.Publish(ctx, ch, []byte(strconv.Itoa(i)), keep); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, ch := range chs {
		for name, c := range map[string]*collector{"a": ca, "b": cb} {
			checkFor(t, 5*time.Second, func() error {
				if err := checkSequence(c.get(ch), 4*each); err != nil {
					return fmt.Errorf("node %s, %s: %w", name, ch, err)
				}
				return nil
			})
		}
	}
	st := a.Stats()
	if st.Lost != 0 || st.Refetched != 0 {
		t.Fatalf("healthy run lost or refetched publications: %+v", st)
	}
}

// Thousands of channels subscribed at once take a few batched commands on
// a fixed number of connections and goroutines.
func TestRedisSubscribeBatched(t *testing.T) {
	srv := redistest.Start(t)
	cfg := testRedisConfig(srv.URL())
	r := newRedis(t, cfg)
	newCollector(r)
	waitReady(t, r, true, 5*time.Second)
	before := runtime.NumGoroutine()
	const channels, workers = 4000, 400
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= channels; i = next.Add(1) {
				if err := r.Subscribe(context.Background(), "batch:"+strconv.FormatInt(i, 10)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if after := runtime.NumGoroutine(); after > before+5 {
		t.Fatalf("%d goroutines after subscribing %d channels, %d before", after, channels, before)
	}
	calls := commandCalls(t, srv, "ssubscribe")
	t.Logf("%d SSUBSCRIBE commands for %d channels", calls, channels)
	// Without batching each channel would take its own command.
	if calls > channels/10 {
		t.Fatalf("%d SSUBSCRIBE commands for %d channels, want batches", calls, channels)
	}
	if subConns := pubsubConnections(t, srv); subConns != cfg.Shards {
		t.Fatalf("%d pub/sub connections, want %d (one per shard)", subConns, cfg.Shards)
	}
	// Delivery works on a channel of the batch.
	c := newCollector(r)
	if _, err := r.Publish(context.Background(), "batch:1234", []byte("x"), keep); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, func() error { return checkSequence(c.get("batch:1234"), 1) })
}

// commandCalls returns how often the server ran the command.
func commandCalls(t testing.TB, srv *redistest.Server, cmd string) int {
	t.Helper()
	info, err := srv.Do("INFO", "commandstats")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(info, "cmdstat_"+cmd+":calls=")
	if !ok {
		return 0
	}
	n, err := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// pubsubConnections counts the server's connections with subscriptions.
func pubsubConnections(t testing.TB, srv *redistest.Server) int {
	t.Helper()
	list, err := srv.Do("CLIENT", "LIST")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, " sub=") && !strings.Contains(line, " sub=0 ") || strings.Contains(line, " ssub=") && !strings.Contains(line, " ssub=0") {
			n++
		}
	}
	return n
}

// A Redis Cluster of three masters: the hash-tagged keys and shard
// channels, the scripts and the slot-routed pub/sub connections work
// through go-redis's cluster client, with the shards spread over the
// masters.
func TestRedisClusterConformance(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	cfg := testRedisConfig(c.URL())
	brokertest.Run(t, func(t *testing.T) broker.Broker { return newRedis(t, cfg) })
	brokertest.RunPresence(t, func(t *testing.T) broker.PresenceManager { return newRedis(t, cfg) })
}
