package engine

import (
	"hash/maphash"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// refusal says which abuse limit turned a client away; its String is the
// metric label and the connection log's reason.
type refusal uint8

const (
	admitted      refusal = iota
	refuseIPConns         // the address holds its share of connections
	refuseIPRate          // the address opens connections too fast
	refuseIPTable         // the address table is full (see ipStripeCap)
)

func (r refusal) String() string {
	switch r {
	case refuseIPConns:
		return "ip_conns"
	case refuseIPRate:
		return "ip_rate"
	case refuseIPTable:
		return "ip_table_full"
	}
	return ""
}

const (
	ipStripes = 64 // a power of two: stripeOf masks the hash

	// ipStripeCap bounds each stripe's entries, 1<<20 in all (about 80 MB of
	// maps when full). Addresses are cheap to come by (a single IPv6 client
	// may own 2^64 of them), so without a bound the table would grow with
	// every address ever seen within a refill period. An address that finds
	// its stripe full is refused with ip_table_full instead. The seeded hash
	// keeps clients from aiming at one stripe, so the table refuses newcomers
	// only when it is nearly full as a whole. Entries for addresses already
	// in the table are always served.
	ipStripeCap = 1 << 20 / ipStripes

	// ipShrinkMin is the peak below which a stripe's map is not rebuilt: Go
	// maps never give memory back, and rebuilding a small one saves nothing.
	ipShrinkMin = 256

	// maxIPInterval and maxIPTolerance keep the bucket's nanosecond sums far
	// from overflow whatever the configured rate and burst.
	maxIPInterval  = int64(1 << 50)
	maxIPTolerance = int64(1 << 60)
)

// ipLimiter holds the per-address limits on concurrent connections and on
// the rate of new ones. Every event loop calls it from OnOpen and OnClose,
// so it is safe for concurrent use; the table is split into stripes, each
// with its own mutex, so loops contend only when two addresses share a
// stripe at the same instant.
//
// The rate is a token bucket kept as its theoretical arrival time (GCRA):
// one int64 of nanoseconds per address, refilled implicitly by the clock
// moving on, so acquire does integer arithmetic only and never runs a timer.
//
// Addresses are keyed by their 16-byte form (see keyOf), so 192.0.2.1 and
// ::ffff:192.0.2.1 are one client, and zones are ignored.
type ipLimiter struct {
	maxConns  int   // 0: no connection limit
	interval  int64 // nanoseconds one handshake costs; 0: no rate limit
	tolerance int64 // how far ahead of now the bucket may run: (burst-1)*interval
	stripeCap int
	now       func() int64
	seed      maphash.Seed
	cursor    atomic.Uint32 // stripe the next sweep visits
	stripes   [ipStripes]ipStripe
}

type ipKey [16]byte

// keyOf needs no Unmap: As16 already writes an IPv4 address in its
// IPv4-mapped IPv6 form, the form Unmap would have turned back into IPv4.
func keyOf(addr netip.Addr) ipKey { return ipKey(addr.As16()) }

// ipEntry is one address's state. An entry with no connections and a full
// bucket (tat <= now) carries no information and is removed.
type ipEntry struct {
	tat   int64 // theoretical arrival time of the next handshake, in ns
	conns int
}

type ipStripe struct {
	mu   sync.Mutex
	m    map[ipKey]ipEntry
	peak int // largest len(m) since the map was made
	// seen is the latest clock reading under mu; release compares with it
	// rather than read the clock itself.
	seen int64
	_    [32]byte // a cache line each, so loops locking neighbouring stripes do not share one
}

// newIPLimiter returns a limiter allowing maxConns concurrent connections
// and rate new connections a second (with bursts of burst) per address;
// 0 turns either limit off, and with both off it returns nil, which admits
// everything at the cost of a nil check. A burst below 1 counts as 1. now
// reads a monotonic clock in nanoseconds; nil means the time since this
// call.
func newIPLimiter(maxConns int, rate float64, burst int, now func() int64) *ipLimiter {
	l := &ipLimiter{stripeCap: ipStripeCap, now: now, seed: maphash.MakeSeed()}
	if maxConns > 0 {
		l.maxConns = maxConns
	}
	if rate > 0 { // false for NaN as well
		l.interval = int64(min(float64(maxIPInterval), max(1, math.Round(1e9/rate))))
		l.tolerance = maxIPTolerance
		if b := int64(max(burst, 1)) - 1; b < maxIPTolerance/l.interval {
			l.tolerance = b * l.interval
		}
	}
	if l.maxConns == 0 && l.interval == 0 {
		return nil
	}
	if l.now == nil {
		start := time.Now()
		l.now = func() int64 { return int64(time.Since(start)) }
	}
	for i := range l.stripes {
		l.stripes[i].m = make(map[ipKey]ipEntry)
	}
	return l
}

func (l *ipLimiter) stripeOf(k *ipKey) *ipStripe {
	return &l.stripes[maphash.Bytes(l.seed, k[:])&(ipStripes-1)]
}

// clock reads the time only when the rate limit needs it: with the rate
// limit off every bucket stays at tat 0, full at time 0.
func (l *ipLimiter) clock() int64 {
	if l.interval == 0 {
		return 0
	}
	return l.now()
}

// acquire admits a new connection from addr, counting it, or says which
// limit refuses it. Only an admitted connection may be released. Every
// attempt the rate allows costs a token, even one the connection limit then
// refuses: the rate limits connection attempts, which are what a flood is
// made of. An invalid addr (a peer that is not an IP endpoint) is admitted
// uncounted, and release ignores it likewise. It does not allocate for an
// address already in the table.
func (l *ipLimiter) acquire(addr netip.Addr) (ok bool, reason refusal) {
	if l == nil || !addr.IsValid() {
		return true, admitted
	}
	k := keyOf(addr)
	s := l.stripeOf(&k)
	now := l.clock()
	s.mu.Lock()
	e, found := s.m[k]
	if !found && len(s.m) >= l.stripeCap {
		s.mu.Unlock()
		return false, refuseIPTable
	}
	if l.interval > 0 {
		tat := max(e.tat, now)
		if tat-now > l.tolerance {
			s.mu.Unlock()
			return false, refuseIPRate
		}
		e.tat = tat + l.interval
	}
	if l.maxConns > 0 && e.conns >= l.maxConns {
		reason = refuseIPConns
	} else {
		e.conns++
	}
	s.m[k] = e
	s.peak = max(s.peak, len(s.m))
	s.seen = max(s.seen, now)
	s.mu.Unlock()
	return reason == admitted, reason
}

// release uncounts a connection acquire admitted. An address left with no
// connections and a bucket full by the stripe's last reading of the clock
// is forgotten at once; any other waits for sweep. That spares release a
// clock read (about 40 ns here). It does not allocate.
func (l *ipLimiter) release(addr netip.Addr) {
	if l == nil || !addr.IsValid() {
		return
	}
	k := keyOf(addr)
	s := l.stripeOf(&k)
	s.mu.Lock()
	e, found := s.m[k]
	if !found || e.conns <= 0 {
		s.mu.Unlock()
		panic("BUG: ipLimiter released more connections than it admitted")
	}
	e.conns--
	if e.conns == 0 && e.tat <= s.seen {
		delete(s.m, k)
	} else {
		s.m[k] = e
	}
	s.mu.Unlock()
}

// sweep forgets the addresses of one stripe that have no connections and
// a full bucket, and rebuilds the stripe's map if it has shrunk to a
// quarter of its peak, so the table's memory follows the addresses active
// now rather than the most ever seen. Each call takes the next stripe in
// turn, so any loop may call it on its tick: with one caller every 50 ms the
// whole table is swept every 3.2 s, and each call holds one stripe's lock
// for at most ipStripeCap entries.
func (l *ipLimiter) sweep() {
	if l == nil {
		return
	}
	s := &l.stripes[l.cursor.Add(1)&(ipStripes-1)]
	now := l.clock()
	s.mu.Lock()
	s.seen = max(s.seen, now)
	for k, e := range s.m {
		if e.conns == 0 && e.tat <= now {
			delete(s.m, k)
		}
	}
	if s.peak >= ipShrinkMin && len(s.m) <= s.peak/4 {
		m := make(map[ipKey]ipEntry, len(s.m))
		for k, e := range s.m {
			m[k] = e
		}
		s.m, s.peak = m, len(m)
	}
	s.mu.Unlock()
}

// cmdVerdict is cmdBucket's answer to one command.
type cmdVerdict uint8

const (
	cmdOK      cmdVerdict = iota
	cmdLimited            // refuse this command: error 429, keep the connection
	cmdAbusive            // the client ignores 429s: disconnect 4006, close frame 1008
)

const (
	// cmdUnitsPerToken makes the bucket's arithmetic exact in integers: a
	// command costs one token, or ticks-per-second units, and every wheel
	// tick adds ratePerSec units.
	cmdUnitsPerToken = int64(time.Second / wheelTick)

	// maxCmdRate caps the rate and burst take works with, so twice the
	// capacity still fits the bucket's uint32.
	maxCmdRate = 1 << 24
)

// cmdBucket limits one connection's command rate; it lives in the
// connection and belongs to that connection's loop goroutine. It is 8
// bytes, and its zero value is a full bucket.
//
// The bucket counts debt, not tokens, so that zero means full, and it is
// refilled lazily from the wheel tick the caller passes in. Refused
// commands are charged too: a client that keeps sending while refused
// stays refused, and once its refused commands, net of what refilled
// meanwhile, number more than a whole burst, it is abusive. This
// measures persistence by how far the client overshot, not by counting
// consecutive refusals: refills let a command through now and then, which
// would reset such a count however fast the client sends. A client that
// backs off after its first 429 recovers in (debt-capacity)/rate; one
// sending at A commands a second against a rate R is closed about
// burst/(A-R) seconds after its bucket ran dry.
type cmdBucket struct {
	debt uint32 // units owed; capacity is burst*cmdUnitsPerToken
	last uint32 // wheel tick of the last take, modulo 2^32 (13 years)
}

// take charges one command at wheel tick nowTick against ratePerSec
// commands a second with bursts of burst (a burst below 1 counts as 1;
// both are capped at 1<<24). A rate of 0 or less turns the limit off. It
// does not allocate.
func (b *cmdBucket) take(nowTick int64, ratePerSec, burst int) cmdVerdict {
	if ratePerSec <= 0 {
		return cmdOK
	}
	rate := int64(min(ratePerSec, maxCmdRate))
	capacity := int64(min(max(burst, 1), maxCmdRate)) * cmdUnitsPerToken
	now := uint32(nowTick)
	elapsed := int64(now - b.last) // wraps correctly across 2^32
	b.last = now
	debt := int64(b.debt)
	if elapsed >= debt { // rate >= 1, so the refill covers the debt
		debt = 0
	} else {
		debt = max(0, debt-elapsed*rate)
	}
	debt += cmdUnitsPerToken
	verdict := cmdOK
	switch {
	case debt > 2*capacity:
		verdict = cmdAbusive
		debt = 2*capacity + cmdUnitsPerToken // commands read after the verdict must not wrap it
	case debt > capacity:
		verdict = cmdLimited
	}
	b.debt = uint32(debt)
	return verdict
}
