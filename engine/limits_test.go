package engine

import (
	"fmt"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// fakeClock is the limiter's injected clock, in nanoseconds; atomic because
// the concurrency test moves it from many goroutines.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() int64 { return c.ns.Load() }

// ipEntries counts the limiter's table and checks no entry holds a
// negative count.
func ipEntries(t testing.TB, l *ipLimiter) (entries, conns int) {
	t.Helper()
	for i := range l.stripes {
		s := &l.stripes[i]
		s.mu.Lock()
		for k, e := range s.m {
			if e.conns < 0 {
				t.Errorf("%v: %d connections", netip.AddrFrom16(k), e.conns)
			}
			entries++
			conns += e.conns
		}
		s.mu.Unlock()
	}
	return entries, conns
}

// sweepAll runs one full round of sweeps.
func sweepAll(l *ipLimiter) {
	for range ipStripes {
		l.sweep()
	}
}

func addr(s string) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	return netip.MustParseAddr(s)
}

func TestIPLimiterSteps(t *testing.T) {
	const ms = int64(time.Millisecond)
	type step struct {
		at     int64  // clock, ns
		op     string // acquire, release, sweep (a whole round)
		addr   string
		reason refusal // of an acquire; admitted when ok
	}
	a, b := "192.0.2.1", "192.0.2.2"
	cases := []struct {
		name     string
		maxConns int
		rate     float64
		burst    int
		steps    []step
		entries  int // left in the table after the steps
	}{
		{"conns", 2, 0, 0, []step{
			{0, "acquire", a, admitted},
			{0, "acquire", a, admitted},
			{0, "acquire", a, refuseIPConns},
			{0, "acquire", b, admitted},
			{0, "release", a, admitted},
			{0, "acquire", a, admitted},
			{0, "acquire", a, refuseIPConns},
		}, 2},
		{"rate refills lazily", 0, 10, 3, []step{
			{0, "acquire", a, admitted},
			{0, "acquire", a, admitted},
			{0, "acquire", a, admitted},
			{0, "acquire", a, refuseIPRate},
			{0, "acquire", b, admitted},
			{99 * ms, "acquire", a, refuseIPRate},
			{100 * ms, "acquire", a, admitted},
			{100 * ms, "acquire", a, refuseIPRate},
			{time.Second.Nanoseconds(), "acquire", a, admitted},
			{time.Second.Nanoseconds(), "acquire", a, admitted},
			{time.Second.Nanoseconds(), "acquire", a, admitted},
			{time.Second.Nanoseconds(), "acquire", a, refuseIPRate},
		}, 2},
		{"refused attempts cost a token", 1, 1, 2, []step{
			{0, "acquire", a, admitted},
			{0, "acquire", a, refuseIPConns},
			{0, "acquire", a, refuseIPRate},
			{0, "release", a, admitted},
			{0, "acquire", a, refuseIPRate},
			{1000 * ms, "acquire", a, admitted},
		}, 1},
		{"IPv4 and IPv4-mapped IPv6 are one client", 1, 0, 0, []step{
			{0, "acquire", a, admitted},
			{0, "acquire", "::ffff:" + a, refuseIPConns},
			{0, "release", "::ffff:" + a, admitted},
			{0, "acquire", "::ffff:" + a, admitted},
			{0, "acquire", a, refuseIPConns},
		}, 1},
		{"IPv6 addresses are distinct", 1, 0, 0, []step{
			{0, "acquire", "2001:db8::1", admitted},
			{0, "acquire", "2001:db8::2", admitted},
			{0, "acquire", "2001:db8::1", refuseIPConns},
			{0, "acquire", "fe80::1%eth0", admitted},
			{0, "acquire", "fe80::1%eth1", refuseIPConns},
		}, 3},
		{"non-IP peers are not counted", 1, 1, 1, []step{
			{0, "acquire", "", admitted},
			{0, "acquire", "", admitted},
			{0, "release", "", admitted},
			{0, "release", "", admitted},
		}, 0},
		{"release forgets an idle address with a full bucket", 1, 10, 1, []step{
			{0, "acquire", a, admitted},
			{50 * ms, "release", a, admitted}, // bucket refills at 100 ms: kept
			{50 * ms, "acquire", b, admitted},
			{200 * ms, "sweep", "", admitted},  // forgets a, tells b's stripe the time
			{200 * ms, "release", b, admitted}, // full: forgotten
		}, 0},
		{"release leaves a bucket it does not know full to sweep", 1, 10, 1, []step{
			{0, "acquire", a, admitted},
			{200 * ms, "release", a, admitted},
		}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var clock fakeClock
			l := newIPLimiter(tc.maxConns, tc.rate, tc.burst, clock.now)
			for i, st := range tc.steps {
				clock.ns.Store(st.at)
				switch st.op {
				case "acquire":
					ok, reason := l.acquire(addr(st.addr))
					if ok != (st.reason == admitted) || reason != st.reason {
						t.Fatalf("step %d: acquire %s at %v = %v %q, want %q",
							i, st.addr, time.Duration(st.at), ok, reason, st.reason)
					}
				case "release":
					l.release(addr(st.addr))
				case "sweep":
					sweepAll(l)
				}
			}
			if n, _ := ipEntries(t, l); n != tc.entries {
				t.Errorf("%d entries, want %d", n, tc.entries)
			}
		})
	}
}

func TestIPLimiterConfig(t *testing.T) {
	cases := []struct {
		maxConns            int
		rate                float64
		burst               int
		disabled            bool
		interval, tolerance int64
		wantConns           int
	}{
		{maxConns: 0, rate: 0, burst: 5, disabled: true},
		{maxConns: -1, rate: -3, disabled: true},
		{maxConns: 0, rate: math.NaN(), burst: 5, disabled: true},
		{maxConns: 7, rate: 0, wantConns: 7},
		{rate: 10, burst: 3, interval: 1e8, tolerance: 2e8},
		{rate: 0.5, burst: 1, interval: 2e9, tolerance: 0},
		{rate: 3, burst: 0, interval: 333333333, tolerance: 0},
		{rate: math.Inf(1), burst: 5, interval: 1, tolerance: 4},
		{rate: 1e-30, burst: 1 << 40, interval: maxIPInterval, tolerance: maxIPTolerance},
	}
	for _, tc := range cases {
		l := newIPLimiter(tc.maxConns, tc.rate, tc.burst, nil)
		if tc.disabled {
			if l != nil {
				t.Errorf("newIPLimiter(%d, %v, %d) is not nil", tc.maxConns, tc.rate, tc.burst)
			}
			continue
		}
		if l.maxConns != tc.wantConns || l.interval != tc.interval || l.tolerance != tc.tolerance {
			t.Errorf("newIPLimiter(%d, %v, %d): conns %d interval %d tolerance %d, want %d %d %d",
				tc.maxConns, tc.rate, tc.burst, l.maxConns, l.interval, l.tolerance,
				tc.wantConns, tc.interval, tc.tolerance)
		}
	}
}

// TestIPLimiterExtremes holds the bucket's sums away from overflow: the
// slowest rate with the largest burst is clamped to maxIPTolerance /
// maxIPInterval + 1 handshakes, then refuses.
func TestIPLimiterExtremes(t *testing.T) {
	var clock fakeClock
	clock.ns.Store(math.MaxInt64 / 4)
	l := newIPLimiter(0, 1e-30, math.MaxInt, clock.now)
	a := addr("192.0.2.1")
	const burst = int(maxIPTolerance/maxIPInterval) + 1
	for i := range burst {
		if ok, r := l.acquire(a); !ok {
			t.Fatalf("attempt %d: %q", i, r)
		}
	}
	if ok, r := l.acquire(a); ok || r != refuseIPRate {
		t.Fatalf("attempt %d: %v %q, want %q", burst, ok, r, refuseIPRate)
	}
	for range burst {
		l.release(a)
	}
	if n, conns := ipEntries(t, l); n != 1 || conns != 0 {
		t.Fatalf("%d entries with %d connections, want 1 with 0", n, conns)
	}
}

func TestIPLimiterStripeSize(t *testing.T) {
	if n := unsafe.Sizeof(ipStripe{}); n != 64 {
		t.Fatalf("ipStripe is %d bytes, want one 64-byte cache line", n)
	}
}

func TestIPLimiterNil(t *testing.T) {
	var l *ipLimiter
	a := addr("192.0.2.1")
	allocs := testing.AllocsPerRun(100, func() {
		if ok, r := l.acquire(a); !ok || r != admitted {
			t.Fatalf("nil limiter refused: %q", r)
		}
		l.release(a)
		l.sweep()
	})
	if allocs != 0 {
		t.Errorf("%v allocations, want 0", allocs)
	}
}

func TestIPLimiterReleaseUnacquired(t *testing.T) {
	l := newIPLimiter(1, 0, 0, nil)
	defer func() {
		if recover() == nil {
			t.Error("release of an address never acquired did not panic")
		}
	}()
	l.release(addr("192.0.2.1"))
}

// TestIPLimiterSweep checks that sweep forgets exactly the addresses with
// no connections and a full bucket, and only those.
func TestIPLimiterSweep(t *testing.T) {
	var clock fakeClock
	l := newIPLimiter(0, 10, 2, clock.now) // refills 100 ms per token
	idle, held := addr("192.0.2.1"), addr("2001:db8::1")
	for _, a := range []netip.Addr{idle, idle, held} {
		if ok, r := l.acquire(a); !ok {
			t.Fatalf("acquire %v: %q", a, r)
		}
	}
	l.release(idle)
	l.release(idle)
	for _, tc := range []struct {
		at      time.Duration
		entries int
	}{
		{0, 2},
		{199 * time.Millisecond, 2}, // idle's bucket is not full yet
		{200 * time.Millisecond, 1}, // held stays while it has a connection
		{time.Hour, 1},
	} {
		clock.ns.Store(int64(tc.at))
		sweepAll(l)
		if n, _ := ipEntries(t, l); n != tc.entries {
			t.Fatalf("at %v: %d entries after sweep, want %d", tc.at, n, tc.entries)
		}
	}
	l.release(held)
	if n, _ := ipEntries(t, l); n != 0 {
		t.Fatalf("%d entries after the last release, want 0", n)
	}
}

// TestIPLimiterShrink checks that a stripe's map is rebuilt once the
// addresses that grew it are gone, since Go maps keep their peak size.
func TestIPLimiterShrink(t *testing.T) {
	l := newIPLimiter(1, 0, 0, nil)
	const n = ipStripes * ipShrinkMin * 2
	addrs := make([]netip.Addr, n)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if ok, r := l.acquire(addrs[i]); !ok {
			t.Fatalf("acquire %v: %q", addrs[i], r)
		}
	}
	for _, a := range addrs {
		l.release(a)
	}
	grown := 0
	for i := range l.stripes {
		if l.stripes[i].peak >= ipShrinkMin {
			grown++
		}
	}
	if grown == 0 {
		t.Fatal("no stripe reached the shrink threshold: the test proves nothing")
	}
	sweepAll(l)
	for i := range l.stripes {
		if p := l.stripes[i].peak; p != 0 {
			t.Errorf("stripe %d: peak %d after its addresses left, want a rebuilt map", i, p)
		}
	}
}

// TestIPLimiterTableFull fills a stripe and checks that newcomers are
// refused while the addresses already there are still served.
func TestIPLimiterTableFull(t *testing.T) {
	l := newIPLimiter(2, 0, 0, nil)
	l.stripeCap = 1
	in := addr("192.0.2.1")
	kin := keyOf(in)
	var out netip.Addr
	for i := range 1 << 16 {
		c := netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)})
		k := keyOf(c)
		if l.stripeOf(&k) == l.stripeOf(&kin) {
			out = c
			break
		}
	}
	if !out.IsValid() {
		t.Fatal("no address shares a stripe with 192.0.2.1")
	}
	steps := []struct {
		op     string
		a      netip.Addr
		reason refusal
	}{
		{"acquire", in, admitted},
		{"acquire", out, refuseIPTable},
		{"acquire", in, admitted},
		{"acquire", in, refuseIPConns},
		{"release", in, admitted},
		{"release", in, admitted},
		{"acquire", out, admitted},
		{"acquire", in, refuseIPTable},
	}
	for i, st := range steps {
		if st.op == "release" {
			l.release(st.a)
			continue
		}
		if ok, r := l.acquire(st.a); ok != (st.reason == admitted) || r != st.reason {
			t.Fatalf("step %d: acquire %v = %v %q, want %q", i, st.a, ok, r, st.reason)
		}
	}
}

// TestIPLimiterConcurrent has loops' worth of goroutines acquire and
// release one shared address and their own, with the clock moving under
// them. The shared address must never hold more than its limit, and
// afterwards every count is zero and sweep empties the table.
func TestIPLimiterConcurrent(t *testing.T) {
	const (
		workers  = 8
		rounds   = 2000
		maxConns = 4
	)
	var clock fakeClock
	l := newIPLimiter(maxConns, 1e6, 64, clock.now) // 1 µs a token
	shared := [2]netip.Addr{addr("192.0.2.1"), addr("::ffff:192.0.2.1")}
	var inflight, admittedShared atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			var held []netip.Addr
			for i := range rounds {
				clock.ns.Add(300)
				if ok, _ := l.acquire(shared[i&1]); ok {
					admittedShared.Add(1)
					if n := inflight.Add(1); n > maxConns {
						t.Errorf("%d connections held on the shared address, limit %d", n, maxConns)
					}
					inflight.Add(-1)
					l.release(shared[(i>>1)&1])
				}
				own := netip.AddrFrom4([4]byte{10, byte(w), byte(i % 5), 1})
				if ok, _ := l.acquire(own); ok {
					held = append(held, own)
				}
				if len(held) > 3 {
					l.release(held[0])
					held = held[1:]
				}
				if i%50 == 0 {
					l.sweep()
				}
			}
			for _, a := range held {
				l.release(a)
			}
		})
	}
	wg.Wait()
	if admittedShared.Load() == 0 {
		t.Fatal("the shared address was never admitted")
	}
	if _, conns := ipEntries(t, l); conns != 0 {
		t.Fatalf("%d connections counted after every release", conns)
	}
	clock.ns.Add(int64(time.Second))
	sweepAll(l)
	if n, _ := ipEntries(t, l); n != 0 {
		t.Fatalf("%d entries after a full sweep, want 0", n)
	}
}

// TestIPLimiterAllocs holds acquire and release for an address already in
// the table to zero allocations, IPv4-mapped or not.
func TestIPLimiterAllocs(t *testing.T) {
	var clock fakeClock
	l := newIPLimiter(1<<30, 1e12, 1<<20, clock.now)
	for _, s := range []string{"192.0.2.1", "::ffff:192.0.2.1", "2001:db8::1"} {
		a := addr(s)
		if ok, r := l.acquire(a); !ok { // keeps the entry in the table
			t.Fatalf("acquire %v: %q", a, r)
		}
		allocs := testing.AllocsPerRun(1000, func() {
			clock.ns.Add(1e6)
			if ok, r := l.acquire(a); !ok {
				t.Fatalf("acquire %v: %q", a, r)
			}
			l.release(a)
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per acquire and release, want 0", s, allocs)
		}
	}
}

func BenchmarkIPLimiter(b *testing.B) {
	b.Run("held", func(b *testing.B) {
		b.ReportAllocs()
		l := newIPLimiter(1<<30, 1e12, 1<<20, nil)
		a := addr("192.0.2.1")
		l.acquire(a)
		for b.Loop() {
			l.acquire(a)
			l.release(a)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		l := newIPLimiter(1<<30, 1e12, 1<<20, nil)
		var next atomic.Uint32
		b.RunParallel(func(pb *testing.PB) {
			n := next.Add(1)
			a := netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)})
			l.acquire(a)
			for pb.Next() {
				l.acquire(a)
				l.release(a)
			}
		})
	})
}

func TestCmdBucketSize(t *testing.T) {
	if n := unsafe.Sizeof(cmdBucket{}); n > 16 {
		t.Fatalf("cmdBucket is %d bytes, budget 16", n)
	}
	if time.Second%wheelTick != 0 {
		t.Fatalf("wheel tick %v does not divide a second: cmdBucket's rate would drift", wheelTick)
	}
}

func TestCmdBucketSteps(t *testing.T) {
	const (
		ok  = cmdOK
		lim = cmdLimited
		abu = cmdAbusive
	)
	type step struct {
		tick int64
		want []cmdVerdict // one per command taken at tick
	}
	cases := []struct {
		name        string
		init        cmdBucket
		rate, burst int
		steps       []step
	}{
		{"zero value is full", cmdBucket{}, 10, 3, []step{
			{1e6, []cmdVerdict{ok, ok, ok, lim}},
		}},
		{"off", cmdBucket{}, 0, 1, []step{
			{5, []cmdVerdict{ok, ok, ok, ok, ok, ok, ok, ok}},
		}},
		{"a token a tick", cmdBucket{}, 10, 1, []step{
			{100, []cmdVerdict{ok, lim}},
			{101, []cmdVerdict{lim}}, // the refused command was charged
			{103, []cmdVerdict{ok}},
			{104, []cmdVerdict{ok, lim}},
		}},
		{"slower than a tick", cmdBucket{}, 1, 1, []step{
			{0, []cmdVerdict{ok}},
			{5, []cmdVerdict{lim}},
			{15, []cmdVerdict{lim}},
			{30, []cmdVerdict{ok}},
		}},
		{"burst below 1 counts as 1", cmdBucket{}, 5, -3, []step{
			{7, []cmdVerdict{ok, lim}},
		}},
		{"more than a burst of refusals is abusive", cmdBucket{}, 10, 2, []step{
			{0, []cmdVerdict{ok, ok, lim, lim, abu, abu, abu}},
		}},
		{"backing off recovers", cmdBucket{}, 10, 2, []step{
			{0, []cmdVerdict{ok, ok, lim}},
			{1, []cmdVerdict{lim}},
			{3, []cmdVerdict{ok}},
		}},
		{"abusive recovers only by waiting", cmdBucket{}, 10, 1, []step{
			{0, []cmdVerdict{ok, lim, abu, abu, abu, abu}},
			{1, []cmdVerdict{abu}},
			{3, []cmdVerdict{lim}},
			{5, []cmdVerdict{ok}},
		}},
		{"tick counter wraps", cmdBucket{}, 10, 1, []step{
			{1<<32 - 1, []cmdVerdict{ok}},
			{1 << 32, []cmdVerdict{ok, lim}},
		}},
		{"caps keep the debt in range", cmdBucket{debt: 2 * maxCmdRate * uint32(cmdUnitsPerToken)},
			math.MaxInt, math.MaxInt, []step{
				{0, []cmdVerdict{abu}},
				{1, []cmdVerdict{lim}},
				{11, []cmdVerdict{ok}},
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.init
			for _, st := range tc.steps {
				for i, want := range st.want {
					if got := b.take(st.tick, tc.rate, tc.burst); got != want {
						t.Fatalf("tick %d, command %d: verdict %d, want %d (debt %d)",
							st.tick, i, got, want, b.debt)
					}
				}
			}
		})
	}
}

// TestCmdBucketPersistence checks the promise in cmdBucket's comment: a
// client at the rate is never refused, and one sending faster is refused
// once its burst is spent and closed about burst/(A-R) seconds later.
func TestCmdBucketPersistence(t *testing.T) {
	const ticksPerSec = int64(time.Second / wheelTick)
	cases := []struct {
		rate, burst, send int // commands a second; send is a multiple of 10
		limitedAt         int64
		abusiveAt         int64 // ticks; 0: never within a minute
	}{
		{rate: 10, burst: 20, send: 10},
		{rate: 100, burst: 5, send: 100},
		{rate: 10, burst: 20, send: 30, limitedAt: 10, abusiveAt: 20},
		{rate: 10, burst: 20, send: 20, limitedAt: 20, abusiveAt: 40},
		{rate: 10, burst: 20, send: 1000, limitedAt: 1, abusiveAt: 1},
		{rate: 100, burst: 50, send: 200, limitedAt: 5, abusiveAt: 10},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("rate %d burst %d at %d/s", tc.rate, tc.burst, tc.send), func(t *testing.T) {
			var b cmdBucket
			var limitedAt, abusiveAt int64
		ticks:
			for tick := int64(1); tick <= 60*ticksPerSec; tick++ {
				for range int64(tc.send) / ticksPerSec {
					switch b.take(tick, tc.rate, tc.burst) {
					case cmdLimited:
						if limitedAt == 0 {
							limitedAt = tick
						}
					case cmdAbusive:
						abusiveAt = tick
						break ticks
					}
				}
			}
			if limitedAt < tc.limitedAt-1 || limitedAt > tc.limitedAt+1 ||
				abusiveAt < tc.abusiveAt-1 || abusiveAt > tc.abusiveAt+1 {
				t.Fatalf("limited at tick %d, abusive at %d; want about %d and %d",
					limitedAt, abusiveAt, tc.limitedAt, tc.abusiveAt)
			}
		})
	}
}

func TestCmdBucketAllocs(t *testing.T) {
	var b cmdBucket
	tick := int64(0)
	allocs := testing.AllocsPerRun(1000, func() {
		tick++
		b.take(tick, 10, 5)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per take, want 0", allocs)
	}
}
