package broker

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newFakeMemory(t *testing.T) (*Memory, *fakeClock) {
	t.Helper()
	clk := &fakeClock{now: time.Unix(1_000_000, 0)}
	m, err := NewMemory(MemoryConfig{JanitorInterval: -1, Now: clk.Now, EmptyStreamTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, clk
}

func (m *Memory) numStreams() int {
	n := 0
	for i := range m.shards {
		m.shards[i].mu.Lock()
		n += len(m.shards[i].streams)
		m.shards[i].mu.Unlock()
	}
	return n
}

func TestMemoryConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     MemoryConfig
		wantErr bool
	}{
		{
			name: "defaults",
			cfg:  MemoryConfig{},
		},
		{
			name:    "shards not a power of two",
			cfg:     MemoryConfig{Shards: 12},
			wantErr: true,
		},
		{
			name:    "negative shards",
			cfg:     MemoryConfig{Shards: -4},
			wantErr: true,
		},
		{
			name:    "negative empty stream TTL",
			cfg:     MemoryConfig{EmptyStreamTTL: -time.Second},
			wantErr: true,
		},
		{
			name:    "negative empty stream cap",
			cfg:     MemoryConfig{MaxEmptyStreams: -1},
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := NewMemory(tt.cfg)
			if (err != nil) != tt.wantErr {
				t.Fatalf("NewMemory(%+v) error = %v, want error %v", tt.cfg, err, tt.wantErr)
			}
			if m != nil {
				m.Close()
			}
		})
	}
}

func TestMemoryTTLWithFakeClock(t *testing.T) {
	m, clk := newFakeMemory(t)
	ctx := context.Background()
	opts := PublishOptions{HistorySize: 10, HistoryTTL: 10 * time.Second}
	first, err := m.Publish(ctx, "a:1", []byte("1"), opts)
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(6 * time.Second)
	if _, err := m.Publish(ctx, "a:1", []byte("2"), opts); err != nil {
		t.Fatal(err)
	}
	clk.Add(5 * time.Second) // first expired, second not
	res, err := m.History(ctx, "a:1", HistoryRequest{Limit: NoLimit})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Publications) != 1 || res.Publications[0].Offset != 2 || res.Position.Epoch != first.Epoch {
		t.Fatalf("after the first TTL: %+v", res)
	}
	clk.Add(5 * time.Second) // the stream's last publication expired
	m.sweep()
	if n := m.numStreams(); n != 0 {
		t.Fatalf("%d streams after the janitor's sweep, want 0", n)
	}
	res, err = m.History(ctx, "a:1", HistoryRequest{Limit: NoLimit})
	if err != nil {
		t.Fatal(err)
	}
	if res.Position.Offset != 0 || res.Position.Epoch == first.Epoch {
		t.Fatalf("after stream expiry: %+v, want a new empty stream", res.Position)
	}
	// The empty stream History created keeps its epoch for EmptyStreamTTL.
	clk.Add(59 * time.Second)
	m.sweep()
	if n := m.numStreams(); n != 1 {
		t.Fatalf("%d streams before EmptyStreamTTL, want 1", n)
	}
	clk.Add(time.Second)
	m.sweep()
	if n := m.numStreams(); n != 0 {
		t.Fatalf("%d streams after EmptyStreamTTL, want 0", n)
	}
}

func TestMemoryJanitorRunsAndStops(t *testing.T) {
	m, err := NewMemory(MemoryConfig{JanitorInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.Publish(context.Background(), "a:1", []byte("1"), PublishOptions{HistorySize: 1, HistoryTTL: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for m.numStreams() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("janitor never dropped the expired stream")
		}
		time.Sleep(time.Millisecond) // polling interval
	}
	m.Close()
	select {
	case <-m.done:
	default:
		t.Fatal("janitor still running after Close returned")
	}
}

func TestRing(t *testing.T) {
	tests := []struct {
		name  string
		sizes []int // history size for each push, in order
		want  []uint64
	}{
		{
			name:  "grows then wraps",
			sizes: []int{5, 5, 5, 5, 5, 5, 5, 5, 5},
			want:  []uint64{5, 6, 7, 8, 9},
		},
		{
			name:  "size shrinks",
			sizes: []int{8, 8, 8, 8, 8, 8, 2},
			want:  []uint64{6, 7},
		},
		{
			name:  "size grows when full",
			sizes: []int{2, 2, 2, 4, 4},
			want:  []uint64{2, 3, 4, 5},
		},
		{
			name:  "size one",
			sizes: []int{1, 1, 1},
			want:  []uint64{3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r ring
			for i, size := range tt.sizes {
				r.push(entry{pub: Publication{Offset: uint64(i + 1)}}, size)
			}
			if r.n != len(tt.want) {
				t.Fatalf("ring holds %d, want %d", r.n, len(tt.want))
			}
			for i, off := range tt.want {
				if got := r.at(i).pub.Offset; got != off {
					t.Fatalf("entry %d has offset %d, want %d", i, got, off)
				}
			}
		})
	}
}

func TestMemoryPublishAllocs(t *testing.T) {
	m, _ := newFakeMemory(t)
	m.SetHandler(func(string, Publication) {})
	ctx := context.Background()
	if err := m.Subscribe(ctx, "chat:1"); err != nil {
		t.Fatal(err)
	}
	data := []byte(`{"text":"hello"}`)
	opts := PublishOptions{HistorySize: 16, HistoryTTL: time.Minute}
	for i := 0; i < 32; i++ { // fill the ring
		if _, err := m.Publish(ctx, "chat:1", data, opts); err != nil {
			t.Fatal(err)
		}
	}
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := m.Publish(ctx, "chat:1", data, opts); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 1 {
		t.Fatalf("Publish allocates %v times per run, want 1 (the copy of data)", allocs)
	}
	allocs = testing.AllocsPerRun(200, func() {
		if _, err := m.PresenceStats(ctx, "chat:1"); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("PresenceStats allocates %v times per run, want 0", allocs)
	}
}

func TestMemoryManyChannels(t *testing.T) {
	m, _ := newFakeMemory(t)
	ctx := context.Background()
	for i := 0; i < 1000; i++ {
		ch := "chat:" + strconv.Itoa(i)
		for j := 1; j <= 3; j++ {
			pos, err := m.Publish(ctx, ch, []byte("1"), PublishOptions{HistorySize: 2})
			if err != nil || pos.Offset != uint64(j) {
				t.Fatalf("%s publish %d: %+v %v", ch, j, pos, err)
			}
		}
	}
	if n := m.numStreams(); n != 1000 {
		t.Fatalf("%d streams, want 1000", n)
	}
}
