package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/wsedge/wsedge/broker"
	"github.com/wsedge/wsedge/frame"
)

// delayBroker makes every broker and presence call take 0–max at random,
// like a remote broker: the engine must run its calls off the loops.
type delayBroker struct {
	broker.Broker
	pm  broker.PresenceManager
	max time.Duration
}

func (d *delayBroker) delay() {
	time.Sleep(rand.N(d.max + 1)) // a slow broker, not test synchronisation
}

func (d *delayBroker) Subscribe(ctx context.Context, ch string) error {
	d.delay()
	return d.Broker.Subscribe(ctx, ch)
}

func (d *delayBroker) Unsubscribe(ctx context.Context, ch string) error {
	d.delay()
	return d.Broker.Unsubscribe(ctx, ch)
}

func (d *delayBroker) Publish(ctx context.Context, ch string, data []byte, o broker.PublishOptions) (broker.StreamPosition, error) {
	d.delay()
	return d.Broker.Publish(ctx, ch, data, o)
}

func (d *delayBroker) History(ctx context.Context, ch string, r broker.HistoryRequest) (broker.HistoryResult, error) {
	d.delay()
	return d.Broker.History(ctx, ch, r)
}

func (d *delayBroker) AddPresence(ctx context.Context, ch string, i broker.ClientInfo) error {
	d.delay()
	return d.pm.AddPresence(ctx, ch, i)
}

func (d *delayBroker) RemovePresence(ctx context.Context, ch, client string) error {
	d.delay()
	return d.pm.RemovePresence(ctx, ch, client)
}

func (d *delayBroker) Presence(ctx context.Context, ch string) (map[string]broker.ClientInfo, error) {
	d.delay()
	return d.pm.Presence(ctx, ch)
}

func (d *delayBroker) PresenceStats(ctx context.Context, ch string) (broker.PresenceStats, error) {
	d.delay()
	return d.pm.PresenceStats(ctx, ch)
}

func slowBrokerServer(t *testing.T, loops int, max time.Duration) *Server {
	return startServerHook(t, func(c *Config) {
		c.Echo = false
		c.Loops = loops
		c.CommandRate = 0
	}, func(s *Server) {
		d := &delayBroker{Broker: s.broker, pm: s.presence, max: max}
		s.broker, s.presence = d, d
	})
}

// TestAsyncBrokerLoopNeverWaits: with every broker call taking 0–50 ms, a
// flood of subscribes waits on the broker while another connection of the
// same loop keeps its round trips fast: the loop never waits.
func TestAsyncBrokerLoopNeverWaits(t *testing.T) {
	if raceEnabled {
		t.Skip("a latency bound; make test runs this without -race")
	}
	s := slowBrokerServer(t, 1, 50*time.Millisecond)
	const flooders, perFlooder = 50, 40
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for f := range flooders {
		c := protoRaw(t, s.Addr())
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for i := range perFlooder {
				buf = frame.AppendClientFrame(buf, true, frame.OpText,
					fmt.Appendf(nil, `{"id":%d,"op":"subscribe","channel":"bench:f%d-%d"}`, i+1, f, i), [4]byte{1, 2, 3, 4})
			}
			c.nc.Write(buf)
			<-stop
		}()
	}
	probe := protoRaw(t, s.Addr())
	_ = probe.nc.SetDeadline(time.Now().Add(30 * time.Second))
	var rtts []time.Duration
	for i := range 300 {
		start := time.Now()
		probe.send(masked(true, frame.OpText, fmt.Appendf(nil, `{"id":%d,"op":"ping"}`, i+1)))
		if _, _, p, err := probe.readFrame(); err != nil || !containsOK(p) {
			t.Fatalf("ping %d: %s %v", i, p, err)
		}
		rtts = append(rtts, time.Since(start))
	}
	close(stop)
	wg.Wait()
	slices.Sort(rtts)
	p99 := rtts[len(rtts)*99/100]
	t.Logf("ping p50 %v p99 %v max %v while %d subscribes waited on a 0-50 ms broker",
		rtts[len(rtts)/2], p99, rtts[len(rtts)-1], flooders*perFlooder)
	if p99 > 2*time.Millisecond {
		t.Fatalf("ping p99 %v on the loop of a subscribe flood, want under 2 ms", p99)
	}
}

// TestAsyncSubscribeOrdering: with a 0–20 ms broker, subscribers joining
// while publications flow see every publication after their subscribe
// reply's position exactly once, in order, and none before the reply.
func TestAsyncSubscribeOrdering(t *testing.T) {
	s := slowBrokerServer(t, 2, 20*time.Millisecond)
	pub := dialProto(t, s.Addr())
	const total = 150
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := range total {
			pub.call(fmt.Sprintf(`{"op":"publish","channel":"bench:ord","data":%d}`, i+1))
		}
	}()
	type result struct {
		pos    float64
		pushes []float64
		err    error
	}
	results := make(chan result, 10)
	for range 10 {
		c := protoRaw(t, s.Addr())
		go func() {
			_ = c.nc.SetDeadline(time.Now().Add(60 * time.Second))
			c.send(masked(true, frame.OpText, []byte(`{"id":1,"op":"subscribe","channel":"bench:ord"}`)))
			var r result
			for {
				_, _, p, err := c.readFrame()
				if err != nil {
					r.err = err
					results <- r
					return
				}
				var m map[string]any
				if json.Unmarshal(p, &m) != nil {
					r.err = fmt.Errorf("bad JSON %s", p)
					results <- r
					return
				}
				if m["id"] == float64(1) {
					res, _ := m["result"].(map[string]any)
					if res == nil {
						r.err = fmt.Errorf("subscribe: %s", p)
						results <- r
						return
					}
					r.pos = res["offset"].(float64)
					continue
				}
				if m["channel"] != "bench:ord" {
					continue
				}
				// A push before the reply is recorded too and then fails
				// the check below (its offset is not after the position).
				r.pushes = append(r.pushes, m["offset"].(float64))
				if m["offset"] == float64(total) {
					results <- r
					return
				}
			}
		}()
		time.Sleep(time.Duration(rand.N(40)) * time.Millisecond) // spread the subscribes over the publishing, not synchronisation
	}
	<-published
	for range 10 {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		for i, off := range r.pushes {
			if want := r.pos + float64(i) + 1; off != want {
				t.Fatalf("subscribed at %v: push %d has offset %v, want %v (pushes %v)", r.pos, i, off, want, r.pushes)
			}
		}
	}
}
