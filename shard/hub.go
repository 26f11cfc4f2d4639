package shard

import (
	"hash/maphash"
	"math/bits"
	"strings"
	"sync"
)

// MaxShards is the number of shards (event loops) a Hub can track.
const MaxShards = 256

// ShardSet is a set of shard indices in [0, MaxShards). The zero value is
// empty.
//
// Ownership: a ShardSet is a value; a Hub hands out copies, which belong to
// the goroutine that holds them.
type ShardSet [MaxShards / 64]uint64

// Has reports whether shard i is in the set.
func (s *ShardSet) Has(i int) bool { return s[i>>6]&(1<<(i&63)) != 0 }

// Len returns the number of shards in the set.
func (s *ShardSet) Len() int {
	n := 0
	for _, w := range s {
		n += bits.OnesCount64(w)
	}
	return n
}

// Next returns the smallest shard in the set that is >= from, or -1. Loop
// over a set without allocating with
//
//	for i := s.Next(0); i >= 0; i = s.Next(i + 1) { ... }
func (s *ShardSet) Next(from int) int {
	for w := from >> 6; w < len(s); w++ {
		word := s[w]
		if w == from>>6 {
			word &^= 1<<(from&63) - 1
		}
		if word != 0 {
			return w<<6 + bits.TrailingZeros64(word)
		}
	}
	return -1
}

// AppendTo appends the shards in the set to dst in increasing order. It
// allocates only if dst is too short.
func (s *ShardSet) AppendTo(dst []int) []int {
	for i := s.Next(0); i >= 0; i = s.Next(i + 1) {
		dst = append(dst, i)
	}
	return dst
}

func (s *ShardSet) set(i int)   { s[i>>6] |= 1 << (i & 63) }
func (s *ShardSet) unset(i int) { s[i>>6] &^= 1 << (i & 63) }
func (s *ShardSet) empty() bool { return s[0]|s[1]|s[2]|s[3] == 0 }

// hubStripes spreads channels over independent locks, so that publishes on
// different channels do not share a cache line.
const hubStripes = 64

type hubStripe struct {
	mu sync.RWMutex
	m  map[string]*hubEntry
	_  [cacheLine - 32]byte
}

// hubEntry is one channel's shards, and its name boxed once in an
// interface so that a publish can carry it in every shard's message
// without allocating.
type hubEntry struct {
	set  ShardSet
	name any
}

// Hub maps each channel name to the set of shards that have at least one
// local subscriber, so that a publish is posted only to those shards.
//
// Ownership: a Hub is shared by every goroutine of the node. Shards is called
// on every publish, by any goroutine; Add and Remove by a shard's loop when
// its local subscriber count for a channel goes from 0 to 1 or back (what
// Index.Add and Index.Remove report). Channels are spread over striped
// RWMutexes: lookups do not allocate and contend only with lookups and
// updates of channels in the same stripe.
//
// A publish racing with a subscribe: the engine subscribes a connection on
// its loop L in this order: (1) Index.Add on L; (2) if that was L's first
// subscriber, Hub.Add(channel, L), and if that was the node's first shard,
// subscribe to the broker and wait for it; (3) read the channel's current
// offset from history; (4) write the subscribe reply. A publisher (1) gets
// its offset, (2) calls Shards, (3) pushes the frame to each shard's Inbox.
// Shards is linearised with Add by the stripe lock, so a publish whose
// lookup comes after step 2 reaches L, and L delivers it to the connection
// because the Index.Add of step 1 happened earlier on L itself. Every
// publish started after the client received the reply (step 4) looks up
// after step 2, so it is delivered. A publish whose lookup came before step
// 2 may be missed; its offset is at most the one in the reply (its offset
// was assigned before its lookup, which came before step 3), so the client
// either receives it live or recovers it from history with `since`, and
// drops duplicates by offset. Frames that reach L between steps 1 and 4
// would go out before the reply; an engine that wants the reply first marks
// the subscription pending in its Index handle until step 4 and holds
// them. Unsubscribe is the mirror: a frame that
// reaches L after the last local subscriber left finds nobody in the Index
// and is released.
type Hub struct {
	seed    maphash.Seed
	stripes [hubStripes]hubStripe
}

// NewHub returns an empty hub.
func NewHub() *Hub {
	h := &Hub{seed: maphash.MakeSeed()}
	for i := range h.stripes {
		h.stripes[i].m = make(map[string]*hubEntry)
	}
	return h
}

func (h *Hub) stripe(channel string) *hubStripe {
	return &h.stripes[maphash.String(h.seed, channel)%hubStripes]
}

// Add records that shard has local subscribers to channel and reports
// whether it is the first shard of the node to have any (the engine then
// subscribes the node to the broker). Adding a shard already present is a
// no-op that returns false. It allocates when the channel is new to the
// node (the name is copied, so it may alias a reusable buffer). Shard
// must be in [0, MaxShards).
func (h *Hub) Add(channel string, shard int) (first bool) {
	s := h.stripe(channel)
	s.mu.Lock()
	e := s.m[channel]
	if e == nil {
		// Never assign to an existing key: Go would replace the stored
		// name with channel, which may alias the caller's buffer.
		name := strings.Clone(channel)
		e = &hubEntry{name: name}
		s.m[name] = e
	}
	first = e.set.empty()
	e.set.set(shard)
	s.mu.Unlock()
	return first
}

// Remove records that shard has no more local subscribers to channel and
// reports whether no shard of the node has any left (the engine then
// unsubscribes the node from the broker); the channel is then forgotten.
// Removing a shard that is not present is a no-op that returns false.
// It does not allocate.
//
// The transitions Add and Remove report are linearised per channel by the
// stripe lock, but reach the broker's goroutine from several loops in any
// order. That goroutine should treat them as hints and reconcile: subscribe
// when Shards(channel) is non-empty and the node is not subscribed,
// unsubscribe when it is empty and the node is.
func (h *Hub) Remove(channel string, shard int) (last bool) {
	s := h.stripe(channel)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[channel]
	if e == nil || !e.set.Has(shard) {
		return false
	}
	e.set.unset(shard)
	if e.set.empty() {
		delete(s.m, channel)
		return true
	}
	return false
}

// Shards returns the shards with local subscribers to channel (empty if
// none). It does not allocate and is safe for concurrent use.
func (h *Hub) Shards(channel string) ShardSet {
	set, _ := h.Lookup(channel)
	return set
}

// Lookup is Shards that also returns the channel's name boxed in an
// interface (a string), the same value for as long as the channel has
// shards, or nil if it has none: a publisher passes it in each shard's
// message instead of boxing the name itself. It does not allocate.
func (h *Hub) Lookup(channel string) (set ShardSet, name any) {
	s := h.stripe(channel)
	s.mu.RLock()
	if e := s.m[channel]; e != nil {
		set, name = e.set, e.name
	}
	s.mu.RUnlock()
	return set, name
}

// Len returns the number of channels with subscribers on this node, for
// metrics. It takes every stripe's read lock in turn.
func (h *Hub) Len() int {
	n := 0
	for i := range h.stripes {
		s := &h.stripes[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
