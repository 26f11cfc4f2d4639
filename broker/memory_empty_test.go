package broker

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// checkIdle asserts the idle lists' invariants: a stream is listed exactly
// when it is empty and its channel unsubscribed, an empty stream of a
// subscribed channel does not expire, and no shard lists more than its cap.
func (m *Memory) checkIdle() error {
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		listed := make(map[*stream]bool)
		for s := sh.idle.root.next; s != &sh.idle.root; s = s.next {
			if s.next.prev != s || listed[s] {
				sh.mu.Unlock()
				return fmt.Errorf("shard %d: idle list broken at %q", i, s.channel)
			}
			listed[s] = true
		}
		err := func() error {
			if len(listed) != sh.idle.n || sh.idle.n > sh.maxIdle {
				return fmt.Errorf("shard %d: %d listed, n = %d, cap %d", i, len(listed), sh.idle.n, sh.maxIdle)
			}
			for ch, s := range sh.streams {
				_, sub := sh.subs[ch]
				if s.channel != ch || listed[s] != (s.top == 0 && !sub) {
					return fmt.Errorf("shard %d: stream %q (top %d, subscribed %v) listed %v", i, ch, s.top, sub, listed[s])
				}
				if s.top == 0 && sub && s.expiresAt != 0 {
					return fmt.Errorf("shard %d: subscribed empty stream %q expires", i, ch)
				}
				delete(listed, s)
			}
			if len(listed) != 0 {
				return fmt.Errorf("shard %d: %d listed streams are not in the map", i, len(listed))
			}
			return nil
		}()
		sh.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

func (m *Memory) numIdle() int {
	n := 0
	for i := range m.shards {
		m.shards[i].mu.Lock()
		n += m.shards[i].idle.n
		m.shards[i].mu.Unlock()
	}
	return n
}

func (m *Memory) hasStream(channel string) bool {
	sh := m.shard(channel)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.streams[channel] != nil
}

func mustHistory(t *testing.T, m *Memory, channel string, req HistoryRequest) HistoryResult {
	t.Helper()
	res, err := m.History(context.Background(), channel, req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func heapAlloc() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// A client naming a million fresh channels leaves at most MaxEmptyStreams
// empty streams behind, and a subscribed empty channel keeps its epoch
// through the churn.
func TestMemoryEmptyStreamChurn(t *testing.T) {
	const churn = 1_000_000
	clk := &fakeClock{now: time.Unix(1_000_000, 0)}
	m, err := NewMemory(MemoryConfig{JanitorInterval: -1, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	m.SetHandler(func(string, Publication) {})
	if err := m.Subscribe(ctx, "chat:kept"); err != nil {
		t.Fatal(err)
	}
	kept := mustHistory(t, m, "chat:kept", HistoryRequest{}).Position

	before := heapAlloc()
	for i := 0; i < churn; i++ {
		if _, err := m.History(ctx, "chat:"+strconv.Itoa(i), HistoryRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	grown := int64(heapAlloc()) - int64(before)
	t.Logf("heap grew %d bytes over %d fresh channels", grown, churn)

	limit := m.cfg.MaxEmptyStreams
	if n := m.numIdle(); n > limit {
		t.Fatalf("%d idle empty streams after %d fresh channels, want at most %d", n, churn, limit)
	}
	if n := m.numStreams(); n > limit+1 {
		t.Fatalf("%d streams after %d fresh channels, want at most %d", n, churn, limit+1)
	}
	if err := m.checkIdle(); err != nil {
		t.Fatal(err)
	}
	// 196 bytes a record measured (channel names here are short); a
	// thousand a record is generous yet far below the million records an
	// unbounded map would keep.
	if bound := int64(limit) * 1000; grown > bound {
		t.Fatalf("heap grew %d bytes over the churn, want at most %d", grown, bound)
	}
	if got := mustHistory(t, m, "chat:kept", HistoryRequest{}).Position; got != kept {
		t.Fatalf("subscribed empty channel at %+v after the churn, want %+v", got, kept)
	}
	runtime.KeepAlive(m)
}

// An empty stream dropped from the cap makes recovery from its position
// fail, whatever happens to the channel next; a subscribed one recovers.
func TestMemoryEmptyStreamEviction(t *testing.T) {
	tests := []struct {
		name string
		// subscribe keeps the channel subscribed from before History
		// until the end; otherwise it is never subscribed, or
		// unsubscribed right after History when unsubscribe is set.
		subscribe, unsubscribe bool
		publish                bool // publish once after the churn
		wantRecovered          bool
	}{
		{
			name:    "history only, then published",
			publish: true,
		},
		{
			name: "history only, never published",
		},
		{
			name:        "unsubscribed, then published",
			subscribe:   true,
			unsubscribe: true,
			publish:     true,
		},
		{
			name:        "unsubscribed, never published",
			subscribe:   true,
			unsubscribe: true,
		},
		{
			name:          "subscribed throughout, then published",
			subscribe:     true,
			publish:       true,
			wantRecovered: true,
		},
		{
			name:          "subscribed throughout, never published",
			subscribe:     true,
			wantRecovered: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &fakeClock{now: time.Unix(1_000_000, 0)}
			m, err := NewMemory(MemoryConfig{Shards: 1, MaxEmptyStreams: 4, JanitorInterval: -1, Now: clk.Now})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			ctx := context.Background()
			m.SetHandler(func(string, Publication) {})
			const ch = "chat:target"
			if tt.subscribe {
				if err := m.Subscribe(ctx, ch); err != nil {
					t.Fatal(err)
				}
			}
			old := mustHistory(t, m, ch, HistoryRequest{}).Position
			if tt.unsubscribe {
				if err := m.Unsubscribe(ctx, ch); err != nil {
					t.Fatal(err)
				}
			}
			for i := 0; i < 4; i++ {
				mustHistory(t, m, "chat:fresh"+strconv.Itoa(i), HistoryRequest{})
			}
			if m.hasStream(ch) != tt.wantRecovered {
				t.Fatalf("stream kept %v after the churn, want %v", m.hasStream(ch), tt.wantRecovered)
			}
			if err := m.checkIdle(); err != nil {
				t.Fatal(err)
			}
			var pos StreamPosition
			if tt.publish {
				if pos, err = m.Publish(ctx, ch, []byte("1"), PublishOptions{HistorySize: 10}); err != nil {
					t.Fatal(err)
				}
			}
			res := mustHistory(t, m, ch, HistoryRequest{Since: &old, Limit: NoLimit})
			if res.Recovered != tt.wantRecovered {
				t.Fatalf("recovery from %+v: Recovered %v, want %v (result %+v)", old, res.Recovered, tt.wantRecovered, res)
			}
			if tt.publish && res.Position != pos {
				t.Fatalf("position %+v, want the publication's %+v", res.Position, pos)
			}
			if (res.Position.Epoch == old.Epoch) != tt.wantRecovered {
				t.Fatalf("epoch %q after the churn, was %q: kept %v, want %v", res.Position.Epoch, old.Epoch, res.Position.Epoch == old.Epoch, tt.wantRecovered)
			}
			wantPubs := 0
			if tt.wantRecovered && tt.publish {
				wantPubs = 1
			}
			if len(res.Publications) != wantPubs {
				t.Fatalf("%d publications recovered, want %d", len(res.Publications), wantPubs)
			}
		})
	}
}

// Empty streams are dropped oldest idle first, and leave the cap when they
// are published to or subscribed.
func TestMemoryEmptyStreamOrder(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1_000_000, 0)}
	m, err := NewMemory(MemoryConfig{Shards: 1, MaxEmptyStreams: 3, JanitorInterval: -1, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	m.SetHandler(func(string, Publication) {})
	for _, ch := range []string{"a:1", "a:2", "a:3", "a:4"} {
		mustHistory(t, m, ch, HistoryRequest{})
	}
	if _, err := m.Publish(ctx, "a:3", []byte("1"), PublishOptions{HistorySize: 1}); err != nil {
		t.Fatal(err)
	}
	if err := m.Subscribe(ctx, "a:4"); err != nil {
		t.Fatal(err)
	}
	// a:2 is the only idle stream left; a:5 .. a:7 fill the cap after it.
	for _, ch := range []string{"a:5", "a:6", "a:7"} {
		mustHistory(t, m, ch, HistoryRequest{})
	}
	if err := m.checkIdle(); err != nil {
		t.Fatal(err)
	}
	for ch, want := range map[string]bool{"a:1": false, "a:2": false, "a:3": true, "a:4": true, "a:5": true, "a:6": true, "a:7": true} {
		if got := m.hasStream(ch); got != want {
			t.Errorf("stream %s kept %v, want %v", ch, got, want)
		}
	}
	// Unsubscribed, a:4 becomes the newest idle stream.
	if err := m.Unsubscribe(ctx, "a:4"); err != nil {
		t.Fatal(err)
	}
	mustHistory(t, m, "a:8", HistoryRequest{})
	if err := m.checkIdle(); err != nil {
		t.Fatal(err)
	}
	if !m.hasStream("a:4") || m.hasStream("a:5") {
		t.Fatalf("after a:4's Unsubscribe and a:8: a:4 kept %v, a:5 kept %v; want true, false", m.hasStream("a:4"), m.hasStream("a:5"))
	}
}

// An empty stream keeps its epoch while its channel is subscribed, and
// EmptyStreamTTL after the Unsubscribe; repeating the Unsubscribe does not
// extend it.
func TestMemoryEmptyStreamTTLWhileSubscribed(t *testing.T) {
	m, clk := newFakeMemory(t) // EmptyStreamTTL: one minute
	ctx := context.Background()
	m.SetHandler(func(string, Publication) {})
	if err := m.Subscribe(ctx, "a:1"); err != nil {
		t.Fatal(err)
	}
	epoch := mustHistory(t, m, "a:1", HistoryRequest{}).Position.Epoch
	clk.Add(time.Hour)
	m.sweep()
	if got := mustHistory(t, m, "a:1", HistoryRequest{}).Position.Epoch; got != epoch {
		t.Fatalf("subscribed empty channel's epoch changed after an hour: %q -> %q", epoch, got)
	}
	if err := m.Unsubscribe(ctx, "a:1"); err != nil {
		t.Fatal(err)
	}
	clk.Add(30 * time.Second)
	if err := m.Unsubscribe(ctx, "a:1"); err != nil {
		t.Fatal(err)
	}
	clk.Add(29 * time.Second)
	m.sweep()
	if !m.hasStream("a:1") {
		t.Fatal("empty stream dropped before EmptyStreamTTL after its Unsubscribe")
	}
	if err := m.checkIdle(); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Second)
	m.sweep()
	if m.hasStream("a:1") {
		t.Fatal("empty stream kept EmptyStreamTTL after its first Unsubscribe")
	}
	if err := m.checkIdle(); err != nil {
		t.Fatal(err)
	}
}
