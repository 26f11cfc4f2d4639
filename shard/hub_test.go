package shard

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

func TestShardSet(t *testing.T) {
	tests := []struct {
		name   string
		shards []int
	}{
		{
			name:   "empty",
			shards: nil,
		},
		{
			name:   "one",
			shards: []int{0},
		},
		{
			name:   "word edges",
			shards: []int{63, 64, 127, 128, 255},
		},
		{
			name:   "dense",
			shards: []int{1, 2, 3, 4, 5, 6, 7, 8},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s ShardSet
			for _, i := range tt.shards {
				s.set(i)
			}
			if got := s.AppendTo(nil); !slices.Equal(got, tt.shards) {
				t.Fatalf("AppendTo = %v, want %v", got, tt.shards)
			}
			if s.Len() != len(tt.shards) {
				t.Fatalf("Len = %d, want %d", s.Len(), len(tt.shards))
			}
			for i := range MaxShards {
				if s.Has(i) != slices.Contains(tt.shards, i) {
					t.Fatalf("Has(%d) = %v", i, s.Has(i))
				}
			}
			if s.empty() != (len(tt.shards) == 0) {
				t.Fatalf("empty() = %v", s.empty())
			}
		})
	}
}

func TestHubTransitions(t *testing.T) {
	type step struct {
		add   bool
		ch    string
		shard int
		want  bool
	}
	tests := []struct {
		name  string
		steps []step
		left  map[string][]int
	}{
		{
			name: "first and last",
			steps: []step{
				{add: true, ch: "a", shard: 0, want: true},
				{add: true, ch: "a", shard: 1, want: false},
				{add: false, ch: "a", shard: 0, want: false},
				{add: false, ch: "a", shard: 1, want: true},
			},
			left: map[string][]int{"a": nil},
		},
		{
			name: "idempotent",
			steps: []step{
				{add: true, ch: "a", shard: 3, want: true},
				{add: true, ch: "a", shard: 3, want: false},
				{add: false, ch: "a", shard: 7, want: false},
				{add: false, ch: "b", shard: 3, want: false},
			},
			left: map[string][]int{"a": {3}, "b": nil},
		},
		{
			name: "channels independent",
			steps: []step{
				{add: true, ch: "a", shard: 0, want: true},
				{add: true, ch: "b", shard: 255, want: true},
				{add: false, ch: "a", shard: 0, want: true},
			},
			left: map[string][]int{"a": nil, "b": {255}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHub()
			for i, s := range tt.steps {
				var got bool
				if s.add {
					got = h.Add(s.ch, s.shard)
				} else {
					got = h.Remove(s.ch, s.shard)
				}
				if got != s.want {
					t.Fatalf("step %d %+v: got %v", i, s, got)
				}
			}
			n := 0
			for ch, want := range tt.left {
				set := h.Shards(ch)
				if got := set.AppendTo(nil); !slices.Equal(got, want) {
					t.Fatalf("Shards(%q) = %v, want %v", ch, got, want)
				}
				if len(want) > 0 {
					n++
				}
			}
			if h.Len() != n {
				t.Fatalf("Len = %d, want %d", h.Len(), n)
			}
		})
	}
}

// TestHubCopiesChannelName passes names that alias a buffer the caller
// then reuses, as a zero-copy parser would, for a new channel and for one
// the hub already knows.
func TestHubCopiesChannelName(t *testing.T) {
	h := NewHub()
	buf := []byte("chat:room1")
	h.Add(unsafeString(buf), 0)
	h.Add(unsafeString(buf), 1)
	copy(buf, "xxxxxxxxxx")
	if got := h.Shards("chat:room1"); got.Len() != 2 {
		t.Fatalf("Shards after the caller's buffer changed: %v", got.AppendTo(nil))
	}
}

// TestHubConcurrent has one goroutine per shard subscribing and
// unsubscribing its shard on shared channels while readers look them up.
// The first/last transitions of each channel must alternate, which they
// do only if Add and Remove are linearised.
func TestHubConcurrent(t *testing.T) {
	h := NewHub()
	channels := []string{"a", "b", "c", "d"}
	var balance [4]atomic.Int64
	var stop atomic.Bool
	var readers sync.WaitGroup
	for range 2 {
		readers.Go(func() {
			for !stop.Load() {
				for _, ch := range channels {
					set := h.Shards(ch)
					if set.Len() > 8 {
						t.Errorf("Shards(%q) has %d shards, only 8 exist", ch, set.Len())
					}
				}
			}
		})
	}
	var writers sync.WaitGroup
	for shard := range 8 {
		writers.Go(func() {
			for i := range 2000 {
				c := (i + shard) % len(channels)
				if h.Add(channels[c], shard) {
					balance[c].Add(1)
				}
				if h.Remove(channels[c], shard) {
					balance[c].Add(-1)
				}
			}
		})
	}
	writers.Wait()
	stop.Store(true)
	readers.Wait()
	for c, ch := range channels {
		if b := balance[c].Load(); b != 0 {
			t.Errorf("channel %q: firsts minus lasts = %d, want 0", ch, b)
		}
	}
	if h.Len() != 0 {
		t.Fatalf("Len = %d after everyone left", h.Len())
	}
}

func TestHubNoAllocs(t *testing.T) {
	h := NewHub()
	for i := range 100 {
		h.Add(fmt.Sprint("chan", i), i%4)
	}
	var sink int
	dst := make([]int, 0, MaxShards)
	allocs := testing.AllocsPerRun(1000, func() {
		set := h.Shards("chan42")
		dst = set.AppendTo(dst[:0])
		sink += len(dst)
		h.Add("chan42", 7)
		h.Remove("chan42", 7)
	})
	if allocs != 0 {
		t.Fatalf("Shards/AppendTo/Add/Remove of a known channel: %v allocs, want 0", allocs)
	}
	if sink == 0 {
		t.Fatal("lookup found no shard")
	}
}
