package engine

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// idemWindow remembers the result of recent publishes by idempotency key,
// so that a retried publish is answered with its original offset instead
// of being published again. It is bounded twice: by time (window) and by
// count (max keys, spread over stripes, the oldest evicted first), so a
// client naming fresh keys forever costs a fixed amount of memory: about
// 64 bytes per key (map slot and ring slot), 16 MiB at the default 2^18.
//
// A key is the 128-bit hash of channel and key under two random seeds; a
// collision (probability about n²/2^129) would answer one publish with
// another's offset. Safe for concurrent use: ingest loops and HTTP API
// goroutines share it.
type idemWindow struct {
	seed1, seed2 maphash.Seed
	window       time.Duration
	stripes      []idemStripe
	evicted      atomic.Uint64 // keys pushed out by the count bound before their window ended
}

type idemKey struct{ a, b uint64 }

// idemEntry is a key's state: pending while its publish is in flight,
// then its result.
type idemEntry struct {
	offset  uint64
	epoch   string // shared with the broker's stream; not copied
	at      int64  // unix nanoseconds of the reservation
	pending bool
}

type idemStripe struct {
	mu   sync.Mutex
	m    map[idemKey]idemEntry
	ring []idemKey // insertion order, head the oldest; grows to max, then wraps
	max  int
	head int
	n    int
	_    [32]byte
}

const idemStripes = 64

func newIdemWindow(window time.Duration, maxKeys int) *idemWindow {
	w := &idemWindow{seed1: maphash.MakeSeed(), seed2: maphash.MakeSeed(), window: window}
	if maxKeys <= 0 || window <= 0 {
		return w // off: every key is new
	}
	per := max(1, maxKeys/idemStripes)
	w.stripes = make([]idemStripe, idemStripes)
	for i := range w.stripes {
		w.stripes[i].m = make(map[idemKey]idemEntry)
		w.stripes[i].max = per
	}
	return w
}

// key hashes a channel and an idempotency key. It does not allocate.
func (w *idemWindow) key(channel, key []byte) idemKey {
	var h1, h2 maphash.Hash
	h1.SetSeed(w.seed1)
	h2.SetSeed(w.seed2)
	_, _ = h1.Write(channel)
	_, _ = h2.Write(channel)
	_ = h1.WriteByte(0)
	_ = h2.WriteByte(0)
	_, _ = h1.Write(key)
	_, _ = h2.Write(key)
	return idemKey{h1.Sum64(), h2.Sum64()}
}

// idemState is what reserve found.
type idemState uint8

const (
	idemNew     idemState = iota // reserved: publish, then complete or cancel
	idemDone                     // published before: answer with entry
	idemPending                  // in flight elsewhere: answer "in progress"
)

// reserve looks k up; a new key is marked pending. It does not allocate
// in steady state (the stripe's map and ring stop growing at the bound).
func (w *idemWindow) reserve(k idemKey, now time.Time) (idemEntry, idemState) {
	if w.stripes == nil {
		return idemEntry{}, idemNew
	}
	s := &w.stripes[k.a%idemStripes]
	t := now.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(t - int64(w.window))
	if e, ok := s.m[k]; ok {
		if e.pending {
			return e, idemPending
		}
		return e, idemDone
	}
	switch {
	case s.n == len(s.ring) && len(s.ring) < s.max && s.head == 0:
		s.ring = append(s.ring, k) // still growing: the ring has not wrapped
	case s.n == len(s.ring) && len(s.ring) < s.max:
		// Not full, but head moved: unroll so the ring can grow.
		s.ring = append(append(make([]idemKey, 0, min(2*len(s.ring)+1, s.max)), s.ring[s.head:]...), s.ring[:s.head]...)
		s.head = 0
		s.ring = append(s.ring, k)
	default:
		if s.n == len(s.ring) {
			delete(s.m, s.ring[s.head])
			s.head = (s.head + 1) % len(s.ring)
			s.n--
			w.evicted.Add(1)
		}
		s.ring[(s.head+s.n)%len(s.ring)] = k
	}
	s.n++
	s.m[k] = idemEntry{at: t, pending: true}
	return idemEntry{}, idemNew
}

// expire drops the keys reserved before cutoff (oldest first).
func (s *idemStripe) expire(cutoff int64) {
	for s.n > 0 {
		k := s.ring[s.head]
		e, ok := s.m[k]
		if ok && e.at >= cutoff {
			return
		}
		delete(s.m, k)
		s.head = (s.head + 1) % len(s.ring)
		s.n--
	}
}

// complete records a reserved key's result. A key evicted meanwhile stays
// forgotten (the count bound wins).
func (w *idemWindow) complete(k idemKey, offset uint64, epoch string) {
	if w.stripes == nil {
		return
	}
	s := &w.stripes[k.a%idemStripes]
	s.mu.Lock()
	if e, ok := s.m[k]; ok && e.pending {
		s.m[k] = idemEntry{offset: offset, epoch: epoch, at: e.at}
	}
	s.mu.Unlock()
}

// cancel forgets a reserved key whose publish failed, so a retry
// publishes. Its ring slot stays until it expires or is evicted.
func (w *idemWindow) cancel(k idemKey) {
	if w.stripes == nil {
		return
	}
	s := &w.stripes[k.a%idemStripes]
	s.mu.Lock()
	if e, ok := s.m[k]; ok && e.pending {
		delete(s.m, k)
	}
	s.mu.Unlock()
}

// len counts the remembered keys, for tests and metrics.
func (w *idemWindow) len() int {
	n := 0
	for i := range w.stripes {
		s := &w.stripes[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
