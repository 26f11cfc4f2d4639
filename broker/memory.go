package broker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"hash/maphash"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// MemoryConfig configures Memory; NewMemory copies it. Zero fields take the
// defaults of SetDefaults.
type MemoryConfig struct {
	// Shards is the number of lock shards, a power of two. Channels hash to
	// shards; publishes on channels of different shards never contend.
	Shards int
	// JanitorInterval is how often the one janitor goroutine drops expired
	// streams and publications. Negative disables it: expiry is then only
	// applied lazily when a channel is accessed.
	JanitorInterval time.Duration
	// EmptyStreamTTL is how long an empty stream (made by History, never
	// published to) keeps its epoch once its channel has no subscription:
	// counted from its creation or from the channel's Unsubscribe, while
	// a subscribed channel's empty stream does not expire. It only has to
	// span a client's reconnect, so the default, 10 minutes, is the
	// longest history TTL of the default namespaces: an empty channel
	// stays recoverable as long as a published one.
	EmptyStreamTTL time.Duration
	// MaxEmptyStreams caps the empty streams of channels without a
	// subscription, which anyone may create by naming fresh channels in
	// subscribe or history; past it the one idle longest is dropped (see
	// History). Each costs about 200 bytes, 450 with a 255-byte channel
	// name, so the default 65,536 holds them under 30 MiB while keeping
	// the epochs of that many quiet channels, say the personal channels
	// of users who all disconnected at once, for their reconnect. It is
	// applied per shard: MaxEmptyStreams/Shards each, at least one.
	// Empty streams of subscribed channels are not counted: subscriptions
	// bound them.
	MaxEmptyStreams int
	// Now is the clock (tests inject a fake one).
	Now func() time.Time
}

// SetDefaults fills the zero fields of c.
func (c *MemoryConfig) SetDefaults() {
	if c.Shards == 0 {
		n := 1
		for n < 4*runtime.GOMAXPROCS(0) || n < 16 {
			n <<= 1
		}
		c.Shards = n
	}
	if c.JanitorInterval == 0 {
		c.JanitorInterval = time.Second
	}
	if c.EmptyStreamTTL == 0 {
		c.EmptyStreamTTL = 10 * time.Minute
	}
	if c.MaxEmptyStreams == 0 {
		c.MaxEmptyStreams = 65536
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate names the first bad field.
func (c *MemoryConfig) Validate() error {
	switch {
	case c.Shards <= 0 || c.Shards&(c.Shards-1) != 0:
		return fmt.Errorf("broker: MemoryConfig.Shards = %d, want a power of two", c.Shards)
	case c.EmptyStreamTTL < 0:
		return fmt.Errorf("broker: MemoryConfig.EmptyStreamTTL = %v, want >= 0", c.EmptyStreamTTL)
	case c.MaxEmptyStreams < 0:
		return fmt.Errorf("broker: MemoryConfig.MaxEmptyStreams = %d, want >= 0", c.MaxEmptyStreams)
	case c.Now == nil:
		return fmt.Errorf("broker: MemoryConfig.Now is nil")
	}
	return nil
}

// Memory is the single-node Broker and PresenceManager: history streams,
// subscriptions and presence in process memory, sharded by channel so that
// many channels publish in parallel. Its epochs are random per stream, so a
// restart (or a stream dropped by TTL or RemoveHistory) changes them and
// clients learn that their history is gone.
//
// Streams come from publishes; History on a channel without one makes an
// empty stream to hand out an epoch, and those are bounded: a subscribed
// channel's by the subscriptions, the others by MaxEmptyStreams and
// EmptyStreamTTL, so a client naming millions of fresh channels costs a
// fixed amount of memory.
//
// Memory is safe for concurrent use. It runs at most one goroutine, the
// janitor, stopped by Close. The handler is called by the publishing
// goroutine while it holds the channel's shard lock.
//
// Lock order: a shard's mu and pmu are never held together, and no lock is
// held while calling anything but the handler.
type Memory struct {
	cfg     MemoryConfig
	seed    maphash.Seed
	mask    uint64
	shards  []memShard
	handler atomic.Pointer[Handler]

	closed    atomic.Bool
	closeOnce sync.Once
	stop      chan struct{}
	done      chan struct{}
}

var (
	_ Broker          = (*Memory)(nil)
	_ PresenceManager = (*Memory)(nil)
)

type memShard struct {
	mu      sync.Mutex
	streams map[string]*stream
	subs    map[string]struct{}
	idle    idleList // empty streams of unsubscribed channels
	maxIdle int

	pmu      sync.Mutex
	presence map[string]*presenceSet

	_ [64]byte // keep neighbouring shards' locks off this cache line
}

// NeverBlocks reports that Memory's calls take at most a short lock, so
// the engine may call them on its event loops.
func (m *Memory) NeverBlocks() bool { return true }

// NewMemory returns a Memory with cfg's zero fields defaulted, and starts
// its janitor unless cfg.JanitorInterval is negative.
func NewMemory(cfg MemoryConfig) (*Memory, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Memory{
		cfg:    cfg,
		seed:   maphash.MakeSeed(),
		mask:   uint64(cfg.Shards - 1),
		shards: make([]memShard, cfg.Shards),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	for i := range m.shards {
		sh := &m.shards[i]
		sh.streams = make(map[string]*stream)
		sh.subs = make(map[string]struct{})
		sh.idle.init()
		sh.maxIdle = max(cfg.MaxEmptyStreams/cfg.Shards, 1)
		sh.presence = make(map[string]*presenceSet)
	}
	if cfg.JanitorInterval > 0 {
		go m.janitor(cfg.JanitorInterval)
	} else {
		close(m.done)
	}
	return m, nil
}

func (m *Memory) shard(channel string) *memShard {
	return &m.shards[maphash.String(m.seed, channel)&m.mask]
}

func (m *Memory) check(ctx context.Context) error {
	if m.closed.Load() {
		return ErrClosed
	}
	return ctx.Err()
}

// SetHandler implements Broker.
func (m *Memory) SetHandler(h Handler) {
	m.handler.Store(&h)
}

// Subscribe implements Broker.
func (m *Memory) Subscribe(ctx context.Context, channel string) error {
	if err := m.check(ctx); err != nil {
		return err
	}
	if m.handler.Load() == nil {
		return ErrNoHandler
	}
	sh := m.shard(channel)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.subs[channel] = struct{}{}
	if s := sh.liveStreamLocked(channel, m.cfg.Now().UnixNano()); s != nil && s.top == 0 {
		sh.idle.remove(s)
		s.expiresAt = 0
	}
	return nil
}

// Unsubscribe implements Broker.
func (m *Memory) Unsubscribe(ctx context.Context, channel string) error {
	if err := m.check(ctx); err != nil {
		return err
	}
	sh := m.shard(channel)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.subs[channel]; !ok {
		return nil // a repeated Unsubscribe must not extend the TTL
	}
	delete(sh.subs, channel)
	now := m.cfg.Now().UnixNano()
	if s := sh.liveStreamLocked(channel, now); s != nil && s.top == 0 {
		m.idleLocked(sh, s, now)
	}
	return nil
}

// Publish implements Broker. It allocates the copy of data and, amortised,
// the history ring while it grows to HistorySize; nothing else in steady
// state.
func (m *Memory) Publish(ctx context.Context, channel string, data []byte, opts PublishOptions) (StreamPosition, error) {
	if err := m.check(ctx); err != nil {
		return StreamPosition{}, err
	}
	if opts.HistorySize < 0 || opts.HistoryTTL < 0 {
		return StreamPosition{}, ErrBadOptions
	}
	pub := Publication{Data: bytes.Clone(data)}
	sh := m.shard(channel)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if opts.HistorySize > 0 {
		now := m.cfg.Now().UnixNano()
		s := sh.liveStreamLocked(channel, now)
		if s == nil {
			s = sh.newStreamLocked(channel)
		}
		sh.idle.remove(s) // published, it is no longer a capped empty stream
		s.top++
		var exp int64
		if opts.HistoryTTL > 0 {
			exp = now + int64(opts.HistoryTTL)
		}
		pub.Offset, pub.Epoch = s.top, s.epoch
		s.ring.push(entry{pub: pub, expiresAt: exp}, opts.HistorySize)
		// The stream outlives its newest publication, and an unsubscribed
		// empty stream keeps at least its EmptyStreamTTL.
		switch {
		case exp == 0:
			s.expiresAt = 0
		case exp > s.expiresAt:
			s.expiresAt = exp
		}
		s.ring.trimExpired(now)
	}
	if _, ok := sh.subs[channel]; ok {
		if h := m.handler.Load(); h != nil {
			(*h)(channel, pub)
		}
	}
	return StreamPosition{Offset: pub.Offset, Epoch: pub.Epoch}, nil
}

// History implements Broker. It allocates the result slice, and on a
// channel without a stream the empty stream it makes.
//
// That empty stream is dropped after EmptyStreamTTL without a subscription,
// or earlier when more than MaxEmptyStreams of them exist. Either way a
// client holding its position {0, epoch} learns that it cannot recover:
// the next History or Publish starts a stream with a new random epoch, so
// recovery from the old position answers Recovered false. It would answer
// true only if the new 64-bit epoch equalled the old one.
func (m *Memory) History(ctx context.Context, channel string, req HistoryRequest) (HistoryResult, error) {
	if err := m.check(ctx); err != nil {
		return HistoryResult{}, err
	}
	sh := m.shard(channel)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := m.cfg.Now().UnixNano()
	s := sh.liveStreamLocked(channel, now)
	if s == nil {
		s = sh.newStreamLocked(channel)
		if _, ok := sh.subs[channel]; !ok {
			m.idleLocked(sh, s, now)
		}
	}
	s.ring.trimExpired(now)
	res := HistoryResult{Position: StreamPosition{Offset: s.top, Epoch: s.epoch}}
	r := &s.ring
	first := s.top + 1 // offset of the oldest retained publication
	if r.n > 0 {
		first = r.at(0).pub.Offset
	}

	var from uint64 // first offset to return
	var want uint64 // publications the request asks for
	if req.Since != nil {
		since := *req.Since
		if since.Epoch != s.epoch || since.Offset > s.top {
			return res, nil
		}
		from = max(since.Offset+1, first)
		want = s.top - since.Offset
	} else {
		from = first
		if req.Limit >= 0 && uint64(r.n) > uint64(req.Limit) {
			from = s.top - uint64(req.Limit) + 1
		}
	}
	count := s.top + 1 - from
	if req.Limit >= 0 {
		count = min(count, uint64(req.Limit))
	}
	if count > 0 {
		res.Publications = make([]Publication, count)
		base := int(from - first)
		for i := range res.Publications {
			res.Publications[i] = r.at(base + i).pub
		}
	}
	res.Recovered = req.Since != nil && count == want
	return res, nil
}

// RemoveHistory implements Broker.
func (m *Memory) RemoveHistory(ctx context.Context, channel string) error {
	if err := m.check(ctx); err != nil {
		return err
	}
	sh := m.shard(channel)
	sh.mu.Lock()
	if s := sh.streams[channel]; s != nil {
		sh.dropLocked(s)
	}
	sh.mu.Unlock()
	return nil
}

// Close stops the janitor and makes later calls return ErrClosed. It is
// idempotent and always returns nil.
func (m *Memory) Close() error {
	m.closeOnce.Do(func() {
		m.closed.Store(true)
		close(m.stop)
	})
	<-m.done
	return nil
}

func (m *Memory) janitor(every time.Duration) {
	defer close(m.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.sweep()
		}
	}
}

// sweep drops expired streams and publications of every shard, one shard
// lock at a time.
func (m *Memory) sweep() {
	now := m.cfg.Now().UnixNano()
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		for _, s := range sh.streams {
			if s.expired(now) {
				sh.dropLocked(s)
			} else {
				s.ring.trimExpired(now)
			}
		}
		sh.mu.Unlock()
	}
}

// stream is one channel's history: guarded by its shard's mu.
type stream struct {
	channel   string
	epoch     string
	top       uint64 // last offset assigned; 0 while the stream is empty
	expiresAt int64  // unix nanoseconds; 0 never
	ring      ring

	// prev and next link the stream into its shard's idle list; nil when
	// it is not listed.
	prev, next *stream
}

func (s *stream) expired(now int64) bool {
	return s.expiresAt != 0 && now >= s.expiresAt
}

// liveStreamLocked returns the channel's stream, or nil when it has none
// or it expired (then it is dropped).
func (sh *memShard) liveStreamLocked(channel string, now int64) *stream {
	s := sh.streams[channel]
	if s != nil && s.expired(now) {
		sh.dropLocked(s)
		return nil
	}
	return s
}

// newStreamLocked starts the channel's stream, empty, with a new epoch and
// no expiry.
func (sh *memShard) newStreamLocked(channel string) *stream {
	s := &stream{channel: channel, epoch: newEpoch()}
	sh.streams[channel] = s
	return s
}

func (sh *memShard) dropLocked(s *stream) {
	sh.idle.remove(s)
	delete(sh.streams, s.channel)
}

// idleLocked starts the EmptyStreamTTL of s, an empty stream whose channel
// has no subscription, and lists it as the newest idle stream, dropping the
// oldest past the shard's cap.
func (m *Memory) idleLocked(sh *memShard, s *stream, now int64) {
	s.expiresAt = now + int64(m.cfg.EmptyStreamTTL)
	sh.idle.pushBack(s)
	for sh.idle.n > sh.maxIdle {
		sh.dropLocked(sh.idle.root.next)
	}
}

// idleList holds a shard's idle streams, empty and unsubscribed, in the
// order they became idle: a circular doubly linked list through
// stream.prev and next around root, so that listing, unlisting and
// dropping the oldest are O(1) and allocation-free.
type idleList struct {
	root stream
	n    int
}

func (l *idleList) init() {
	l.root.prev, l.root.next = &l.root, &l.root
}

func (l *idleList) pushBack(s *stream) {
	if s.next != nil {
		// Listing it twice would corrupt the list and spin the eviction
		// loop under the shard lock.
		panic("BUG: broker: empty stream " + s.channel + " listed twice")
	}
	s.prev, s.next = l.root.prev, &l.root
	s.prev.next = s
	l.root.prev = s
	l.n++
}

// remove unlists s; it does nothing when s is not listed.
func (l *idleList) remove(s *stream) {
	if s.next == nil {
		return
	}
	s.prev.next, s.next.prev = s.next, s.prev
	s.prev, s.next = nil, nil
	l.n--
}

// newEpoch returns 64 random bits in hex: a stream restarted under the same
// name practically never reuses an epoch.
func newEpoch() string {
	var b [8]byte
	rand.Read(b[:]) // never fails since Go 1.24; it crashes the program instead
	return hex.EncodeToString(b[:])
}

type entry struct {
	pub       Publication
	expiresAt int64 // unix nanoseconds; 0 never
}

// ring holds a stream's publications oldest first. It grows by doubling up
// to the history size, so a channel with few publications stays small, and
// then overwrites its oldest entry without allocating.
type ring struct {
	buf  []entry
	head int
	n    int
}

func (r *ring) at(i int) *entry {
	return &r.buf[(r.head+i)%len(r.buf)]
}

func (r *ring) pop() {
	r.buf[r.head] = entry{}
	r.head = (r.head + 1) % len(r.buf)
	r.n--
}

func (r *ring) push(e entry, size int) {
	for r.n >= size {
		r.pop()
	}
	if r.n == len(r.buf) {
		nb := make([]entry, min(max(2*len(r.buf), 4), size))
		for i := 0; i < r.n; i++ {
			nb[i] = *r.at(i)
		}
		r.buf, r.head = nb, 0
	}
	*r.at(r.n) = e
	r.n++
}

// trimExpired drops expired publications from the oldest end: a
// publication leaves once it and every older one have expired, so the
// retained offsets stay contiguous.
func (r *ring) trimExpired(now int64) {
	for r.n > 0 {
		e := r.at(0)
		if e.expiresAt == 0 || now < e.expiresAt {
			return
		}
		r.pop()
	}
}
