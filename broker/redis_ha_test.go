package broker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
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

func TestRedisSentinelConformance(t *testing.T) {
	h := redistest.StartSentinel(t)
	cfg := testRedisConfig(h.URL())
	brokertest.Run(t, func(t *testing.T) broker.Broker { return newRedis(t, cfg) })
	brokertest.RunPresence(t, func(t *testing.T) broker.PresenceManager { return newRedis(t, cfg) })
}

// timedCollector records each delivery with the time it arrived.
type timedCollector struct {
	mu   sync.Mutex
	pubs []broker.Publication
	at   []time.Time
}

func newTimedCollector(b broker.Broker, channel string) *timedCollector {
	c := &timedCollector{}
	b.SetHandler(func(ch string, p broker.Publication) {
		if ch != channel {
			return
		}
		c.mu.Lock()
		c.pubs = append(c.pubs, p)
		c.at = append(c.at, time.Now())
		c.mu.Unlock()
	})
	return c
}

func (c *timedCollector) get() ([]broker.Publication, []time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.pubs), slices.Clone(c.at)
}

// publishResult is one Publish call of the failover publisher; data is
// strconv.Itoa(i) for the i-th call.
type publishResult struct {
	start, end time.Time
	pos        broker.StreamPosition
	err        error
}

// failoverRun is what one Sentinel failover under a publisher measured.
type failoverRun struct {
	killToDelivery    time.Duration // SIGKILL of the master → first delivery of a publish made after it
	promoteToDelivery time.Duration // Sentinel names the replica → that delivery
	lostTail          int           // publishes the old master acknowledged and the replica never got
}

// sentinelFailover runs a publisher on node a and subscribers on nodes a
// and b against a Sentinel-watched master, makes the replica fall behind,
// SIGKILLs the master and checks that both nodes follow the promoted
// replica: calls fail within their timeout meanwhile, Ready turns false
// then true, and every acknowledged publish is delivered to both nodes
// once, in offset order, or (only those the failover lost) superseded by
// a new epoch. Offsets the old master handed out are never reused under
// its epoch.
func sentinelFailover(t testing.TB) failoverRun {
	h := redistest.StartSentinel(t)
	cfg := testRedisConfig(h.URL())
	a, b := newRedis(t, cfg), newRedis(t, cfg)
	const ch = "failover:chat"
	ca, cb := newTimedCollector(a, ch), newTimedCollector(b, ch)
	ctx := context.Background()
	for _, n := range []*broker.Redis{a, b} {
		if err := n.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
		waitReady(t, n, true, 5*time.Second)
	}

	var (
		mu      sync.Mutex
		results []publishResult
		stop    atomic.Bool
		done    = make(chan struct{})
	)
	okCount := func(after time.Time) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, r := range results {
			if r.err == nil && r.start.After(after) {
				n++
			}
		}
		return n
	}
	go func() {
		defer close(done)
		tick := time.NewTicker(2 * time.Millisecond) // pacing, about 500 publishes/s
		defer tick.Stop()
		for i := 0; !stop.Load(); i++ {
			<-tick.C
			r := publishResult{start: time.Now()}
			r.pos, r.err = a.Publish(ctx, ch, []byte(strconv.Itoa(i)), keep)
			r.end = time.Now()
			mu.Lock()
			results = append(results, r)
			mu.Unlock()
		}
	}()
	defer func() {
		stop.Store(true)
		<-done
	}()

	checkFor(t, 5*time.Second, func() error {
		if n := okCount(time.Time{}); n < 20 {
			return fmt.Errorf("%d publishes before the stall", n)
		}
		return nil
	})
	// The replica stops receiving: what the master acknowledges from now
	// on is lost in the failover.
	h.Link.Stall(true)
	stalled := time.Now()
	checkFor(t, 5*time.Second, func() error {
		if n := okCount(stalled); n < 20 {
			return fmt.Errorf("%d publishes after the stall", n)
		}
		return nil
	})
	killed := time.Now()
	h.Master.Kill()
	waitReady(t, a, false, cfg.CanaryTimeout+callSlack)
	waitReady(t, b, false, cfg.CanaryTimeout+callSlack)
	var promoted time.Time
	checkFor(t, 15*time.Second, func() error {
		addr, err := h.MasterAddr()
		if err != nil || addr != h.Replica.Addr() {
			return fmt.Errorf("sentinel names %q (%v), want the replica %s", addr, err, h.Replica.Addr())
		}
		promoted = time.Now()
		return nil
	})
	waitReady(t, a, true, 10*time.Second)
	waitReady(t, b, true, 10*time.Second)
	checkFor(t, 10*time.Second, func() error {
		if n := okCount(promoted); n < 50 {
			return fmt.Errorf("%d publishes since the promotion", n)
		}
		return nil
	})
	stop.Store(true)
	<-done

	// Sort the publishes: before the kill one epoch, after it another,
	// each (epoch, offset) once.
	var run failoverRun
	byPos := make(map[broker.StreamPosition]string)
	var oldEpoch, newEpoch string
	firstAfter := -1
	for i, r := range results {
		if d := r.end.Sub(r.start); d > cfg.OpTimeout+callSlack {
			t.Errorf("publish %d took %v, OpTimeout %v", i, d, cfg.OpTimeout)
		}
		if r.err != nil {
			continue
		}
		if prev, dup := byPos[r.pos]; dup {
			t.Fatalf("publishes %s and %d both got position %+v", prev, i, r.pos)
		}
		byPos[r.pos] = strconv.Itoa(i)
		switch {
		case r.start.Before(killed) && oldEpoch == "":
			oldEpoch = r.pos.Epoch
		case r.start.Before(killed):
			if r.pos.Epoch != oldEpoch {
				t.Fatalf("publish %d before the kill in epoch %s, the others in %s", i, r.pos.Epoch, oldEpoch)
			}
		case newEpoch == "":
			newEpoch, firstAfter = r.pos.Epoch, i
			if r.pos.Epoch == oldEpoch || r.pos.Offset != 1 {
				t.Fatalf("first publish after the failover at %+v, want offset 1 of a new epoch (old %s)", r.pos, oldEpoch)
			}
		case r.pos.Epoch != newEpoch:
			t.Fatalf("publish %d after the failover in epoch %s, the first in %s", i, r.pos.Epoch, newEpoch)
		}
	}
	if oldEpoch == "" || newEpoch == "" {
		t.Fatalf("no publish succeeded before (%q) or after (%q) the failover", oldEpoch, newEpoch)
	}

	for name, c := range map[string]*timedCollector{"a": ca, "b": cb} {
		// Every acknowledged publish arrives once, in offset order within
		// each epoch; the old epoch's last ones may be missing only where
		// the failover lost them, which the new epoch then announces.
		checkFor(t, 5*time.Second, func() error {
			pubs, _ := c.get()
			got := make(map[broker.StreamPosition]bool)
			for _, p := range pubs {
				got[broker.StreamPosition{Offset: p.Offset, Epoch: p.Epoch}] = true
			}
			for pos, data := range byPos {
				if !got[pos] && (pos.Epoch == newEpoch || !got[broker.StreamPosition{Offset: 1, Epoch: newEpoch}]) {
					return fmt.Errorf("node %s: publish %s at %+v not delivered", name, data, pos)
				}
			}
			return nil
		})
		pubs, at := c.get()
		last := map[string]uint64{}
		for i, p := range pubs {
			pos := broker.StreamPosition{Offset: p.Offset, Epoch: p.Epoch}
			if data, ok := byPos[pos]; ok && data != string(p.Data) {
				t.Fatalf("node %s delivered %q at %+v, published there: %q", name, p.Data, pos, data)
			}
			if p.Offset != last[p.Epoch]+1 {
				t.Fatalf("node %s: delivery %d at %+v after offset %d of its epoch", name, i, pos, last[p.Epoch])
			}
			last[p.Epoch] = p.Offset
			if i > 0 && p.Epoch == oldEpoch && pubs[i-1].Epoch == newEpoch {
				t.Fatalf("node %s: old epoch delivered after the new one", name)
			}
		}
		if name == "b" {
			for i, p := range pubs {
				if p.Epoch == newEpoch {
					run.killToDelivery = at[i].Sub(killed)
					run.promoteToDelivery = at[i].Sub(promoted)
					break
				}
			}
		}
	}

	// The replica lacks the stalled tail: a position in it no longer
	// recovers, and the stream is in the new epoch.
	var lastOld broker.StreamPosition
	for _, r := range results[:firstAfter] {
		if r.err == nil {
			lastOld = r.pos
			if r.start.After(stalled) {
				run.lostTail++
			}
		}
	}
	res, err := b.History(ctx, ch, broker.HistoryRequest{Since: &lastOld, Limit: broker.NoLimit})
	if err != nil {
		t.Fatal(err)
	}
	if res.Recovered || res.Position.Epoch != newEpoch {
		t.Fatalf("recovery from %+v after the failover: %+v, want Recovered false in epoch %s", lastOld, res, newEpoch)
	}
	t.Logf("failover: kill→delivery %v, promotion→delivery %v, %d acknowledged publishes lost with the replica's tail; a %+v; b %+v",
		run.killToDelivery, run.promoteToDelivery, run.lostTail, a.Stats(), b.Stats())
	return run
}

func TestRedisSentinelFailover(t *testing.T) {
	run := sentinelFailover(t)
	if run.killToDelivery <= 0 || run.killToDelivery > 15*time.Second {
		t.Fatalf("kill to first delivery %v", run.killToDelivery)
	}
}

// BenchmarkRedisSentinelFailover measures the time from SIGKILL of the
// master to the first delivery, on another node, of a publication made
// after it (go test -run '^$' -bench SentinelFailover -benchtime 3x
// ./broker/). Each iteration starts its own master, replica and Sentinel.
func BenchmarkRedisSentinelFailover(b *testing.B) {
	var sum, worst, promo time.Duration
	for range b.N {
		run := sentinelFailover(b)
		sum += run.killToDelivery
		promo += run.promoteToDelivery
		worst = max(worst, run.killToDelivery)
	}
	b.ReportMetric(float64(sum.Milliseconds())/float64(b.N), "ms-kill-to-delivery")
	b.ReportMetric(float64(worst.Milliseconds()), "ms-kill-to-delivery-max")
	b.ReportMetric(float64(promo.Milliseconds())/float64(b.N), "ms-promotion-to-delivery")
	b.ReportMetric(0, "ns/op")
}

// Two nodes on a Redis Cluster of three masters: the channels' shards
// land on every master, each node's canaries come back through pub/sub
// connections to every master, publications cross nodes once and in
// order; when a master is SIGKILLed (no replica takes over) both nodes
// turn not ready and publishes fail within OpTimeout instead of hanging.
func TestRedisClusterThreeMasters(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	cfg := testRedisConfig(c.URL())
	cfg.Shards = 8
	a, b := newRedis(t, cfg), newRedis(t, cfg)
	ca, cb := newCollector(a), newCollector(b)
	ctx := context.Background()
	waitReady(t, a, true, 5*time.Second)
	waitReady(t, b, true, 5*time.Second)

	// Every master carries the canaries of both nodes' shards on it.
	total := 0
	for i, s := range c.Nodes {
		n := pubsubConnections(t, s)
		if n == 0 {
			t.Fatalf("master %d (%s) has no pub/sub connection: no shard landed on it", i, s.Addr())
		}
		total += n
	}
	if total != 2*cfg.Shards {
		t.Fatalf("%d pub/sub connections over the masters, want %d (one per shard per node)", total, 2*cfg.Shards)
	}

	chs := make([]string, 12)
	for i := range chs {
		chs[i] = "cl:" + strconv.Itoa(i)
		for _, n := range []*broker.Redis{a, b} {
			if err := n.Subscribe(ctx, chs[i]); err != nil {
				t.Fatal(err)
			}
		}
	}
	const each = 50
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, n := range []*broker.Redis{a, b} {
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
		for name, col := range map[string]*collector{"a": ca, "b": cb} {
			checkFor(t, 5*time.Second, func() error {
				if err := checkSequence(col.get(ch), 2*each); err != nil {
					return fmt.Errorf("node %s, %s: %w", name, ch, err)
				}
				return nil
			})
		}
	}
	// Where the channels' streams live.
	home := make(map[string]int)
	for i, s := range c.Nodes {
		keys, err := s.Do("KEYS", "*:m:cl:*")
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range strings.Fields(keys) {
			_, ch, _ := strings.Cut(k, ":m:")
			home[ch] = i
			if got, err := c.NodeOf(k); err != nil || got != i {
				t.Fatalf("key %s on master %d, its slot on %d (%v)", k, i, got, err)
			}
		}
	}
	masters := make(map[int]bool)
	for _, ch := range chs {
		n, ok := home[ch]
		if !ok {
			t.Fatalf("no master holds the stream of %s", ch)
		}
		masters[n] = true
	}
	if len(masters) != len(c.Nodes) {
		t.Fatalf("the streams of %d channels live on %d of %d masters", len(chs), len(masters), len(c.Nodes))
	}
	// A canary late on a loaded machine resubscribes a shard, which then
	// refetches; nothing is lost either way.
	if st := a.Stats(); st.Lost != 0 || st.Refetched != 0 && st.ForcedResubscribes+st.Reconnects == 0 {
		t.Fatalf("healthy run lost or refetched publications: %+v", st)
	}

	// Kill the master of the first channel; nothing takes its slots over.
	dead := home[chs[0]]
	c.Nodes[dead].Kill()
	waitReady(t, a, false, cfg.CanaryTimeout+callSlack)
	waitReady(t, b, false, cfg.CanaryTimeout+callSlack)
	bounded := func(ch string) error {
		start := time.Now()
		_, err := a.Publish(ctx, ch, []byte("x"), keep)
		if d := time.Since(start); d > cfg.OpTimeout+callSlack {
			t.Fatalf("publish to %s took %v with a master down, OpTimeout %v", ch, d, cfg.OpTimeout)
		}
		return err
	}
	for _, ch := range chs {
		err := bounded(ch)
		if home[ch] == dead && err == nil {
			t.Fatalf("publish to %s succeeded with its master down", ch)
		}
	}
	if err := b.Unsubscribe(ctx, chs[0]); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := b.Subscribe(ctx, chs[0]); !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("subscribe with its master down: %v, want ErrUnavailable", err)
	} else if d := time.Since(start); d > cfg.OpTimeout+callSlack {
		t.Fatalf("subscribe took %v with a master down", d)
	}
	// Once the other masters agree it failed, the whole cluster refuses
	// writes (cluster-require-full-coverage): every publish fails, still
	// within its timeout.
	checkFor(t, 10*redistest.NodeTimeout, func() error {
		for i, s := range c.Nodes {
			if i == dead {
				continue
			}
			if info, err := s.Do("CLUSTER", "INFO"); err != nil || !strings.Contains(info, "cluster_state:fail") {
				return fmt.Errorf("master %d: cluster not failed yet (%v)", i, err)
			}
		}
		return nil
	})
	for _, ch := range chs {
		if err := bounded(ch); err == nil {
			t.Fatalf("publish to %s succeeded on a failed cluster", ch)
		}
	}
	if a.Ready() || b.Ready() {
		t.Fatalf("ready on a failed cluster: %+v %+v", a.Stats(), b.Stats())
	}

	// The master comes back empty with its slots: the cluster heals, both
	// nodes turn ready and deliver again, the lost streams under new
	// epochs.
	old := ca.get(chs[0])
	c.Nodes[dead].Restart()
	healed := time.Now()
	waitReady(t, a, true, 10*time.Second)
	waitReady(t, b, true, 10*time.Second)
	t.Logf("ready %v after the master restarted; a %+v", time.Since(healed), a.Stats())
	pos, err := a.Publish(ctx, chs[0], []byte("back"), keep)
	if err != nil {
		t.Fatal(err)
	}
	if pos.Offset != 1 || pos.Epoch == old[len(old)-1].Epoch {
		t.Fatalf("first publish on the restarted master at %+v, want offset 1 of a new epoch", pos)
	}
	for name, col := range map[string]*collector{"a": ca, "b": cb} {
		checkFor(t, 5*time.Second, func() error {
			got := col.get(chs[0])
			if p := got[len(got)-1]; p.Offset != pos.Offset || p.Epoch != pos.Epoch {
				return fmt.Errorf("node %s: last delivery of %s at {%d %s}, want %+v", name, chs[0], p.Offset, p.Epoch, pos)
			}
			return nil
		})
	}
}

// A node whose pub/sub connection was wedged while the stream started a
// new epoch (a failover, or Redis losing it) delivers, once resubscribed,
// the new epoch from its start: the publications made in it before the
// node resubscribed are not dropped for the old epoch's sake.
func TestRedisCatchUpAcrossEpochs(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.NewProxy(t, srv.Addr())
	cfg := testRedisConfig(proxy.URL())
	a := newRedis(t, cfg)                        // through the proxy
	b := newRedis(t, testRedisConfig(srv.URL())) // direct
	ca := newCollector(a)
	newCollector(b)
	ctx := context.Background()
	const ch = "epochs:chat"
	if err := a.Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	waitReady(t, a, true, 5*time.Second)
	publish := func(n int) (last broker.StreamPosition) {
		for i := 0; i < n; i++ {
			pos, err := b.Publish(ctx, ch, []byte(strconv.Itoa(i)), keep)
			if err != nil {
				t.Fatal(err)
			}
			last = pos
		}
		return last
	}
	old := publish(5)
	checkFor(t, 5*time.Second, func() error { return checkSequence(ca.get(ch), 5) })
	if n := proxy.WedgePubSub(); n != cfg.Shards {
		t.Fatalf("wedged %d pub/sub connections, want %d", n, cfg.Shards)
	}
	if err := b.RemoveHistory(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if pos := publish(10); pos.Epoch == old.Epoch || pos.Offset != 10 {
		t.Fatalf("after RemoveHistory the stream is at %+v, want offset 10 of a new epoch", pos)
	}
	checkFor(t, 10*time.Second, func() error {
		if st := a.Stats(); st.ForcedResubscribes == 0 || !a.Ready() {
			return fmt.Errorf("not resubscribed yet: %+v", st)
		}
		return nil
	})
	pos := publish(1)
	checkFor(t, 5*time.Second, func() error {
		got := ca.get(ch)
		if len(got) < 5 {
			return fmt.Errorf("%d deliveries", len(got))
		}
		if err := checkSequence(got[:5], 5); err != nil || got[0].Epoch != old.Epoch {
			return fmt.Errorf("old epoch: %v", err)
		}
		if err := checkSequence(got[5:], int(pos.Offset)); err != nil || got[5].Epoch != pos.Epoch {
			return fmt.Errorf("new epoch %s: %v", pos.Epoch, err)
		}
		return nil
	})
	if st := a.Stats(); st.Lost != 0 || st.Refetched != 10 {
		t.Fatalf("%+v, want the new epoch's 10 publications refetched and none lost", st)
	}
}

// A publish whose reply is lost after Redis applied it is reported as an
// error and not sent again: go-redis's cluster client retries a command
// after a network error on its own, which would publish it twice under
// two offsets (or deliver a publication without history twice).
func TestRedisClusterPublishNotRetried(t *testing.T) {
	c := redistest.StartCluster(t, 1)
	proxy := redistest.NewProxy(t, c.Nodes[0].Addr())
	// The node names the proxy as its address, so that the cluster client
	// talks to it through the proxy after discovering the slots.
	_, port, _ := strings.Cut(proxy.Addr(), ":")
	if _, err := c.Nodes[0].Do("CONFIG", "SET", "cluster-announce-port", port); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, func() error {
		slots, err := c.Nodes[0].Do("CLUSTER", "SLOTS")
		if err != nil || !strings.Contains(slots, "\n"+port+"\n") {
			return fmt.Errorf("CLUSTER SLOTS %q (%v) does not name the proxy's port %s", slots, err, port)
		}
		return nil
	})
	r := newRedis(t, testRedisConfig("redis+cluster://"+proxy.Addr()))
	col := newCollector(r)
	ctx := context.Background()
	const ch = "once:chat"
	if err := r.Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Publish(ctx, ch, []byte("first"), keep); err != nil {
		t.Fatal(err)
	}
	proxy.CutReplyTo("cut-kept")
	if pos, err := r.Publish(ctx, ch, []byte("cut-kept"), keep); err == nil {
		t.Fatalf("publish whose reply was lost succeeded at %+v", pos)
	}
	proxy.CutReplyTo("cut-plain")
	if _, err := r.Publish(ctx, ch, []byte("cut-plain"), broker.PublishOptions{}); err == nil {
		t.Fatal("publish without history whose reply was lost succeeded")
	}
	last, err := r.Publish(ctx, ch, []byte("last"), keep)
	if err != nil {
		t.Fatal(err)
	}
	if last.Offset != 3 {
		t.Fatalf("the publish after the lost reply got offset %d, want 3 (the lost one applied once)", last.Offset)
	}
	res, err := r.History(ctx, ch, broker.HistoryRequest{Limit: broker.NoLimit})
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, p := range res.Publications {
		kept = append(kept, string(p.Data))
	}
	if strings.Join(kept, ",") != "first,cut-kept,last" {
		t.Fatalf("history %q, want first,cut-kept,last", kept)
	}
	checkFor(t, 5*time.Second, func() error {
		var got []string
		for _, p := range col.get(ch) {
			got = append(got, string(p.Data))
		}
		if strings.Join(got, ",") != "first,cut-kept,cut-plain,last" {
			return fmt.Errorf("delivered %q, want first,cut-kept,cut-plain,last", got)
		}
		return nil
	})
}
