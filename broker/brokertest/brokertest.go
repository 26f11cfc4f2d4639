// Package brokertest is the conformance suite of package broker: one set of
// tests that every Broker and PresenceManager implementation (memory, Redis)
// must pass unchanged. An implementation's test calls Run and RunPresence
// with a constructor; the suite runs on the test's goroutines.
//
// Each subtest gets a fresh instance and closes it. Channel names are unique
// per call, so instances may share one server. The suite uses real time:
// TTL tests publish with TTLs of tens of milliseconds and poll with a
// deadline, so an implementation must expire by wall-clock time with at
// most a few seconds of lag.
package brokertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsedge/wsedge/broker"
)

// pollTimeout bounds every wait for asynchronous effects (delivery, expiry).
const pollTimeout = 10 * time.Second

var runID atomic.Uint64

func init() { runID.Store(uint64(time.Now().UnixNano())) }

// channel returns a channel name unique to this process and call.
func channel(name string) string {
	return "brokertest:" + strconv.FormatUint(runID.Add(1), 36) + "-" + name
}

// waitFor polls cond until it returns nil, failing the test with its last
// error after pollTimeout.
func waitFor(t *testing.T, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(pollTimeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", pollTimeout, err)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}

// collector records handler calls per channel.
type collector struct {
	mu   sync.Mutex
	pubs map[string][]broker.Publication
}

func newCollector() *collector {
	return &collector{pubs: make(map[string][]broker.Publication)}
}

func (c *collector) handle(ch string, pub broker.Publication) {
	c.mu.Lock()
	c.pubs[ch] = append(c.pubs[ch], pub)
	c.mu.Unlock()
}

func (c *collector) get(ch string) []broker.Publication {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]broker.Publication(nil), c.pubs[ch]...)
}

func (c *collector) waitCount(t *testing.T, ch string, n int) []broker.Publication {
	t.Helper()
	waitFor(t, func() error {
		if got := len(c.get(ch)); got < n {
			return fmt.Errorf("%s: %d publications delivered, want %d", ch, got, n)
		}
		return nil
	})
	return c.get(ch)
}

func publishN(t *testing.T, b broker.Broker, ch string, n int, opts broker.PublishOptions) broker.StreamPosition {
	t.Helper()
	var pos broker.StreamPosition
	for i := 1; i <= n; i++ {
		var err error
		pos, err = b.Publish(context.Background(), ch, payload(i), opts)
		if err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
	}
	return pos
}

func payload(i int) []byte { return []byte(`{"n":` + strconv.Itoa(i) + `}`) }

func history(t *testing.T, b broker.Broker, ch string, req broker.HistoryRequest) broker.HistoryResult {
	t.Helper()
	res, err := b.History(context.Background(), ch, req)
	if err != nil {
		t.Fatalf("History(%s): %v", ch, err)
	}
	return res
}

// checkPubs asserts that pubs are exactly the publications with offsets
// from..to (inclusive; from > to means none), epoch and payload(offset).
func checkPubs(pubs []broker.Publication, epoch string, from, to uint64) error {
	want := 0
	if to >= from {
		want = int(to - from + 1)
	}
	if len(pubs) != want {
		return fmt.Errorf("%d publications %v, want offsets %d..%d", len(pubs), offsets(pubs), from, to)
	}
	for i, p := range pubs {
		off := from + uint64(i)
		if p.Offset != off || p.Epoch != epoch || !bytes.Equal(p.Data, payload(int(off))) {
			return fmt.Errorf("publication %d = {%d %q %s}, want {%d %q %s}", i, p.Offset, p.Epoch, p.Data, off, epoch, payload(int(off)))
		}
	}
	return nil
}

func offsets(pubs []broker.Publication) []uint64 {
	out := make([]uint64, len(pubs))
	for i, p := range pubs {
		out[i] = p.Offset
	}
	return out
}

var keep = broker.PublishOptions{HistorySize: 100}

// Run runs the Broker conformance suite against instances from newBroker.
func Run(t *testing.T, newBroker func(t *testing.T) broker.Broker) {
	runCases(t, newBroker, []testCase[broker.Broker]{
		{
			name: "OffsetsStartAtOneAndIncrease",
			run:  testOffsets,
		},
		{
			name: "ConcurrentPublishersGetDistinctOffsets",
			run:  testConcurrentOffsets,
		},
		{
			name: "HistorySizeKeepsNewest",
			run:  testHistoryTrim,
		},
		{
			name: "NoHistory",
			run:  testNoHistory,
		},
		{
			name: "Limit",
			run:  testLimit,
		},
		{
			name: "RecoveryComplete",
			run:  testRecoveryComplete,
		},
		{
			name: "RecoveryIncompleteAfterTrim",
			run:  testRecoveryIncomplete,
		},
		{
			name: "RecoveryWrongEpochOrFutureOffset",
			run:  testRecoveryWrongEpoch,
		},
		{
			name: "RemoveHistoryChangesEpoch",
			run:  testRemoveHistory,
		},
		{
			name: "EmptyChannelEpochIsKept",
			run:  testEmptyChannel,
		},
		{
			name: "DataIsCopied",
			run:  testDataCopied,
		},
		{
			name: "TTLExpiresPublications",
			run:  testTTLEntries,
		},
		{
			name: "TTLExpiresStream",
			run:  testTTLStream,
		},
		{
			name: "HandlerOrderUnderConcurrentPublishers",
			run:  testDeliveryOrder,
		},
		{
			name: "UnsubscribedChannelsNotDelivered",
			run:  testUnsubscribed,
		},
		{
			name: "ResubscribeDeliversOnce",
			run:  testResubscribe,
		},
		{
			name: "ManyChannelsSubscribedAtOnce",
			run:  testManyChannels,
		},
		{
			name: "SubscribeBeforeSetHandler",
			run:  testNoHandler,
		},
		{
			name: "BadOptionsAndContext",
			run:  testBadInput,
		},
		{
			name: "CloseIdempotent",
			run:  testClose,
		},
	})
}

// runParallel runs fn(0) … fn(n-1) on n goroutines and fails the test with
// the first error any of them returned.
func runParallel(t *testing.T, n int, fn func(g int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for g := 0; g < n; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(g); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// testCase is one named conformance test of an implementation T.
type testCase[T interface{ Close() error }] struct {
	name string
	run  func(t *testing.T, impl T)
}

// runCases runs each case as a subtest on a fresh instance, closed after it.
func runCases[T interface{ Close() error }](t *testing.T, newImpl func(t *testing.T) T, cases []testCase[T]) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			impl := newImpl(t)
			t.Cleanup(func() {
				if err := impl.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.run(t, impl)
		})
	}
}

func testOffsets(t *testing.T, b broker.Broker) {
	ch := channel("offsets")
	var epoch string
	for i := 1; i <= 5; i++ {
		pos, err := b.Publish(context.Background(), ch, payload(i), keep)
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			epoch = pos.Epoch
		}
		if pos.Offset != uint64(i) || pos.Epoch == "" || pos.Epoch != epoch {
			t.Fatalf("publish %d: position %+v, want offset %d, epoch %q (non-empty)", i, pos, i, epoch)
		}
	}
	if pos := publishN(t, b, channel("other"), 1, keep); pos.Offset != 1 {
		t.Fatalf("another channel's first offset = %d, want 1", pos.Offset)
	}
	res := history(t, b, ch, broker.HistoryRequest{Limit: broker.NoLimit})
	if res.Position != (broker.StreamPosition{Offset: 5, Epoch: epoch}) {
		t.Fatalf("position %+v, want {5 %s}", res.Position, epoch)
	}
	if err := checkPubs(res.Publications, epoch, 1, 5); err != nil {
		t.Fatal(err)
	}
	if res.Recovered {
		t.Fatal("Recovered without Since")
	}
}

func testConcurrentOffsets(t *testing.T, b broker.Broker) {
	const goroutines, each = 8, 50
	ch := channel("concurrent")
	var mu sync.Mutex
	seen := make(map[uint64]bool)
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				pos, err := b.Publish(context.Background(), ch, payload(i), broker.PublishOptions{HistorySize: 10})
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				seen[pos.Offset] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for off := uint64(1); off <= goroutines*each; off++ {
		if !seen[off] {
			t.Fatalf("offset %d never returned; %d distinct offsets, want %d", off, len(seen), goroutines*each)
		}
	}
	if len(seen) != goroutines*each {
		t.Fatalf("%d distinct offsets, want %d", len(seen), goroutines*each)
	}
}

func testHistoryTrim(t *testing.T, b broker.Broker) {
	ch := channel("trim")
	pos := publishN(t, b, ch, 10, broker.PublishOptions{HistorySize: 3})
	res := history(t, b, ch, broker.HistoryRequest{Limit: broker.NoLimit})
	if res.Position != pos || pos.Offset != 10 {
		t.Fatalf("position %+v, last publish %+v, want offset 10", res.Position, pos)
	}
	if err := checkPubs(res.Publications, pos.Epoch, 8, 10); err != nil {
		t.Fatal(err)
	}
}

func testNoHistory(t *testing.T, b broker.Broker) {
	ch := channel("nohistory")
	pos, err := b.Publish(context.Background(), ch, payload(1), broker.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pos != (broker.StreamPosition{}) {
		t.Fatalf("position without history = %+v, want zero", pos)
	}
	res := history(t, b, ch, broker.HistoryRequest{Limit: broker.NoLimit})
	if res.Position.Offset != 0 || len(res.Publications) != 0 {
		t.Fatalf("history of a channel without history: %+v", res)
	}
}

func testLimit(t *testing.T, b broker.Broker) {
	ch := channel("limit")
	pos := publishN(t, b, ch, 10, keep)
	e := pos.Epoch
	tests := []struct {
		name          string
		req           broker.HistoryRequest
		from, to      uint64
		wantRecovered bool
	}{
		{
			name: "newest without since",
			req:  broker.HistoryRequest{Limit: 3},
			from: 8,
			to:   10,
		},
		{
			name: "limit above count",
			req:  broker.HistoryRequest{Limit: 50},
			from: 1,
			to:   10,
		},
		{
			name: "NoLimit returns all",
			req:  broker.HistoryRequest{Limit: broker.NoLimit},
			from: 1,
			to:   10,
		},
		{
			name: "any negative limit returns all",
			req:  broker.HistoryRequest{Limit: -5},
			from: 1,
			to:   10,
		},
		{
			name: "zero limit returns position only",
			req:  broker.HistoryRequest{Limit: 0},
			from: 1,
			to:   0,
		},
		{
			name:          "oldest after since, cut",
			req:           broker.HistoryRequest{Since: &broker.StreamPosition{Offset: 2, Epoch: e}, Limit: 3},
			from:          3,
			to:            5,
			wantRecovered: false,
		},
		{
			name:          "limit exactly the rest",
			req:           broker.HistoryRequest{Since: &broker.StreamPosition{Offset: 7, Epoch: e}, Limit: 3},
			from:          8,
			to:            10,
			wantRecovered: true,
		},
		{
			name:          "zero limit with pending publications",
			req:           broker.HistoryRequest{Since: &broker.StreamPosition{Offset: 7, Epoch: e}, Limit: 0},
			from:          1,
			to:            0,
			wantRecovered: false,
		},
		{
			name:          "zero limit when up to date",
			req:           broker.HistoryRequest{Since: &broker.StreamPosition{Offset: 10, Epoch: e}, Limit: 0},
			from:          1,
			to:            0,
			wantRecovered: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := history(t, b, ch, tt.req)
			if err := checkPubs(res.Publications, e, tt.from, tt.to); err != nil {
				t.Fatal(err)
			}
			if res.Recovered != tt.wantRecovered || res.Position != pos {
				t.Fatalf("Recovered %v position %+v, want %v %+v", res.Recovered, res.Position, tt.wantRecovered, pos)
			}
		})
	}
}

func testRecoveryComplete(t *testing.T, b broker.Broker) {
	ch := channel("recover")
	pos := publishN(t, b, ch, 5, keep)
	for _, since := range []uint64{0, 2, 5} {
		res := history(t, b, ch, broker.HistoryRequest{Since: &broker.StreamPosition{Offset: since, Epoch: pos.Epoch}, Limit: broker.NoLimit})
		if !res.Recovered || res.Position != pos {
			t.Fatalf("since %d: Recovered %v position %+v, want true %+v", since, res.Recovered, res.Position, pos)
		}
		if err := checkPubs(res.Publications, pos.Epoch, since+1, 5); err != nil {
			t.Fatalf("since %d: %v", since, err)
		}
	}
}

func testRecoveryIncomplete(t *testing.T, b broker.Broker) {
	ch := channel("gap")
	pos := publishN(t, b, ch, 10, broker.PublishOptions{HistorySize: 3})
	res := history(t, b, ch, broker.HistoryRequest{Since: &broker.StreamPosition{Offset: 2, Epoch: pos.Epoch}, Limit: broker.NoLimit})
	if res.Recovered {
		t.Fatal("Recovered across publications trimmed from history")
	}
	if err := checkPubs(res.Publications, pos.Epoch, 8, 10); err != nil {
		t.Fatal(err)
	}
	res = history(t, b, ch, broker.HistoryRequest{Since: &broker.StreamPosition{Offset: 7, Epoch: pos.Epoch}, Limit: broker.NoLimit})
	if !res.Recovered {
		t.Fatal("not Recovered from the oldest retained publication's predecessor")
	}
	if err := checkPubs(res.Publications, pos.Epoch, 8, 10); err != nil {
		t.Fatal(err)
	}
}

func testRecoveryWrongEpoch(t *testing.T, b broker.Broker) {
	ch := channel("epoch")
	pos := publishN(t, b, ch, 5, keep)
	for _, since := range []broker.StreamPosition{
		{Offset: 2, Epoch: "x" + pos.Epoch},
		{Offset: 0, Epoch: ""},
		{Offset: 6, Epoch: pos.Epoch},
	} {
		res := history(t, b, ch, broker.HistoryRequest{Since: &since, Limit: broker.NoLimit})
		if res.Recovered || len(res.Publications) != 0 || res.Position != pos {
			t.Fatalf("since %+v: Recovered %v, %d publications, position %+v; want false, 0, %+v", since, res.Recovered, len(res.Publications), res.Position, pos)
		}
	}
}

func testRemoveHistory(t *testing.T, b broker.Broker) {
	ch := channel("remove")
	old := publishN(t, b, ch, 3, keep)
	if err := b.RemoveHistory(context.Background(), ch); err != nil {
		t.Fatal(err)
	}
	res := history(t, b, ch, broker.HistoryRequest{Since: &old, Limit: broker.NoLimit})
	if res.Recovered || res.Position.Offset != 0 || res.Position.Epoch == old.Epoch || res.Position.Epoch == "" {
		t.Fatalf("after RemoveHistory: %+v, want offset 0 and a new epoch (old %q)", res, old.Epoch)
	}
	pos := publishN(t, b, ch, 1, keep)
	if pos.Offset != 1 || pos.Epoch != res.Position.Epoch {
		t.Fatalf("first publish after RemoveHistory: %+v, want {1 %s}", pos, res.Position.Epoch)
	}
}

func testEmptyChannel(t *testing.T, b broker.Broker) {
	ch := channel("empty")
	res := history(t, b, ch, broker.HistoryRequest{Limit: 0})
	if res.Position.Offset != 0 || res.Position.Epoch == "" {
		t.Fatalf("empty channel position %+v, want offset 0 and an epoch", res.Position)
	}
	pos := publishN(t, b, ch, 2, keep)
	if pos.Epoch != res.Position.Epoch {
		t.Fatalf("publish changed the epoch of an empty stream: %q -> %q", res.Position.Epoch, pos.Epoch)
	}
	rec := history(t, b, ch, broker.HistoryRequest{Since: &res.Position, Limit: broker.NoLimit})
	if !rec.Recovered {
		t.Fatal("not Recovered from the empty channel's position")
	}
	if err := checkPubs(rec.Publications, pos.Epoch, 1, 2); err != nil {
		t.Fatal(err)
	}
}

func testDataCopied(t *testing.T, b broker.Broker) {
	ch := channel("copy")
	buf := payload(1)
	if _, err := b.Publish(context.Background(), ch, buf, keep); err != nil {
		t.Fatal(err)
	}
	buf[1] = 'X'
	res := history(t, b, ch, broker.HistoryRequest{Limit: broker.NoLimit})
	if len(res.Publications) != 1 || !bytes.Equal(res.Publications[0].Data, payload(1)) {
		t.Fatalf("history after the caller reused its buffer: %v", res.Publications)
	}
}

func testTTLEntries(t *testing.T, b broker.Broker) {
	ch := channel("ttl-entries")
	publishN(t, b, ch, 1, broker.PublishOptions{HistorySize: 10, HistoryTTL: 50 * time.Millisecond})
	pos, err := b.Publish(context.Background(), ch, payload(2), broker.PublishOptions{HistorySize: 10, HistoryTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() error {
		res := history(t, b, ch, broker.HistoryRequest{Limit: broker.NoLimit})
		if res.Position != pos {
			return fmt.Errorf("position %+v, want %+v", res.Position, pos)
		}
		return checkPubs(res.Publications, pos.Epoch, 2, 2)
	})
	res := history(t, b, ch, broker.HistoryRequest{Since: &broker.StreamPosition{Offset: 0, Epoch: pos.Epoch}, Limit: broker.NoLimit})
	if res.Recovered {
		t.Fatal("Recovered across an expired publication")
	}
}

func testTTLStream(t *testing.T, b broker.Broker) {
	ch := channel("ttl-stream")
	old := publishN(t, b, ch, 3, broker.PublishOptions{HistorySize: 10, HistoryTTL: 50 * time.Millisecond})
	var res broker.HistoryResult
	waitFor(t, func() error {
		res = history(t, b, ch, broker.HistoryRequest{Since: &old, Limit: broker.NoLimit})
		if res.Position.Epoch == old.Epoch {
			return fmt.Errorf("stream still alive: %+v", res.Position)
		}
		return nil
	})
	if res.Recovered || res.Position.Offset != 0 || len(res.Publications) != 0 {
		t.Fatalf("after expiry: %+v, want a new empty stream", res)
	}
	pos := publishN(t, b, ch, 1, broker.PublishOptions{HistorySize: 10, HistoryTTL: time.Hour})
	if pos.Offset != 1 || pos.Epoch != res.Position.Epoch {
		t.Fatalf("first publish after expiry: %+v, want {1 %s}", pos, res.Position.Epoch)
	}
}

func testDeliveryOrder(t *testing.T, b broker.Broker) {
	const channels, publishers, each = 8, 8, 40
	c := newCollector()
	b.SetHandler(c.handle)
	chs := make([]string, channels)
	for i := range chs {
		chs[i] = channel("order" + strconv.Itoa(i))
		if err := b.Subscribe(context.Background(), chs[i]); err != nil {
			t.Fatal(err)
		}
	}
	runParallel(t, publishers, func(p int) error {
		for i := 0; i < each; i++ {
			for _, ch := range chs {
				data := []byte(`"` + strconv.Itoa(p) + "-" + strconv.Itoa(i) + `"`)
				if _, err := b.Publish(context.Background(), ch, data, keep); err != nil {
					return err
				}
			}
		}
		return nil
	})
	for _, ch := range chs {
		pubs := c.waitCount(t, ch, publishers*each)
		if len(pubs) != publishers*each {
			t.Fatalf("%s: %d deliveries, want %d", ch, len(pubs), publishers*each)
		}
		seen := make(map[string]bool)
		for i, p := range pubs {
			if p.Offset != uint64(i+1) || p.Epoch != pubs[0].Epoch {
				t.Fatalf("%s: delivery %d has offset %d epoch %q, want %d %q", ch, i, p.Offset, p.Epoch, i+1, pubs[0].Epoch)
			}
			seen[string(p.Data)] = true
		}
		if len(seen) != publishers*each {
			t.Fatalf("%s: %d distinct payloads delivered, want %d", ch, len(seen), publishers*each)
		}
	}

	ch := channel("order-nohistory")
	if err := b.Subscribe(context.Background(), ch); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(context.Background(), ch, payload(1), broker.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	if p := c.waitCount(t, ch, 1)[0]; p.Offset != 0 || !bytes.Equal(p.Data, payload(1)) {
		t.Fatalf("delivery without history = %+v, want offset 0 and the payload", p)
	}
}

func testUnsubscribed(t *testing.T, b broker.Broker) {
	c := newCollector()
	b.SetHandler(c.handle)
	ctx := context.Background()
	subscribed, other, later := channel("sub"), channel("unsub"), channel("later")
	if err := b.Subscribe(ctx, subscribed); err != nil {
		t.Fatal(err)
	}
	if err := b.Subscribe(ctx, subscribed); err != nil {
		t.Fatalf("second Subscribe: %v", err)
	}
	publishN(t, b, other, 1, keep)
	publishN(t, b, subscribed, 1, keep)
	c.waitCount(t, subscribed, 1)
	if got := c.get(other); len(got) != 0 {
		t.Fatalf("unsubscribed channel delivered: %v", got)
	}

	if err := b.Unsubscribe(ctx, subscribed); err != nil {
		t.Fatal(err)
	}
	if err := b.Unsubscribe(ctx, subscribed); err != nil {
		t.Fatalf("second Unsubscribe: %v", err)
	}
	publishN(t, b, subscribed, 1, keep)
	// A later publication on another subscribed channel marks the point by
	// which a delivery of the one above would have arrived.
	if err := b.Subscribe(ctx, later); err != nil {
		t.Fatal(err)
	}
	publishN(t, b, later, 1, keep)
	c.waitCount(t, later, 1)
	if got := c.get(subscribed); len(got) != 1 {
		t.Fatalf("%d deliveries on a channel after Unsubscribe, want the 1 from before", len(got))
	}
}

func testNoHandler(t *testing.T, b broker.Broker) {
	if err := b.Subscribe(context.Background(), channel("nohandler")); !errors.Is(err, broker.ErrNoHandler) {
		t.Fatalf("Subscribe before SetHandler = %v, want ErrNoHandler", err)
	}
}

func testBadInput(t *testing.T, b broker.Broker) {
	ch := channel("bad")
	for _, opts := range []broker.PublishOptions{
		{HistorySize: -1},
		{HistorySize: 1, HistoryTTL: -time.Second},
	} {
		if _, err := b.Publish(context.Background(), ch, payload(1), opts); !errors.Is(err, broker.ErrBadOptions) {
			t.Fatalf("Publish with %+v = %v, want ErrBadOptions", opts, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Publish(ctx, ch, payload(1), keep); !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish with a canceled context = %v, want context.Canceled", err)
	}
	if _, err := b.History(ctx, ch, broker.HistoryRequest{Limit: broker.NoLimit}); !errors.Is(err, context.Canceled) {
		t.Fatalf("History with a canceled context = %v, want context.Canceled", err)
	}
}

func testClose(t *testing.T, b broker.Broker) {
	for i := 0; i < 2; i++ {
		if err := b.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
	ctx := context.Background()
	if _, err := b.Publish(ctx, channel("closed"), payload(1), keep); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Publish after Close = %v, want ErrClosed", err)
	}
	if _, err := b.History(ctx, channel("closed"), broker.HistoryRequest{Limit: broker.NoLimit}); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("History after Close = %v, want ErrClosed", err)
	}
}
