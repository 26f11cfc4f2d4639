package bench

import (
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// everyoneLoop returns a loop of a broadcast run with the all channel
// bench:all, and a subscriber on it whose subscribe to it succeeded.
func everyoneLoop(t *testing.T) (*loop, *conn) {
	t.Helper()
	cfg := Defaults()
	cfg.Mode, cfg.AllChannel, cfg.Duration = ModeBroadcast, "bench:all", time.Minute
	w := &worker{cfg: cfg}
	w.allPfx = w.allPrefix()
	l, err := newLoop(w, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(l.epfd); unix.Close(l.efd) })
	c := &conn{fd: -1, role: roleSub, state: stOpen, allPending: true}
	l.conns[-1] = c
	l.pendingSubs = 1
	l.onMessage(c, opText, []byte(`{"id":2,"ok":true,"result":{"offset":0,"epoch":"e"}}`))
	if !c.allOK || l.stats.AllSubscribed != 1 || l.allSubs != 1 || l.pendingSubs != 0 {
		t.Fatalf("subscribe reply: allOK %v stats %+v pendingSubs %d", c.allOK, l.stats, l.pendingSubs)
	}
	return l, c
}

func allPush(n int, sent int64) []byte {
	return []byte(`{"channel":"bench:all","offset":` + itoa(int64(n)) + `,"data":{"t":` + itoa(sent) + `,"a":` + itoa(int64(n)) + `,"p":"xx"}}`)
}

func TestEveryoneAccounting(t *testing.T) {
	l, c := everyoneLoop(t)
	now := time.Now().UnixNano()
	ms := int64(time.Millisecond)
	// Broadcasts 1, 2, 2 (again), 4 of 4: 3 unique, 1 duplicate, broadcast
	// 3 missing; broadcast 2's last delivery is the later one (9 ms).
	l.onMessage(c, opText, allPush(1, now-3*ms))
	l.onMessage(c, opText, allPush(2, now-5*ms))
	l.onMessage(c, opText, allPush(2, now-9*ms))
	l.onMessage(c, opText, allPush(4, now-7*ms))
	// A push of its own channel still goes to the per-channel figures, a
	// ping push is a heartbeat, an everyone push without bench data an error.
	l.onMessage(c, opText, []byte(`{"channel":"bench:b1","offset":1,"data":{"t":`+itoa(now)+`,"s":1}}`))
	l.onMessage(c, opText, []byte(`{"ping":{}}`))
	l.onMessage(c, opText, []byte(`{"channel":"bench:all","offset":9,"data":{"t":1}}`))
	l.onMessage(c, opText, allPush(maxAllBroadcasts+1, now))
	s := l.stats
	if s.AllReceived != 4 || s.AllUnique != 3 || s.AllDuplicates != 1 || s.Unique != 1 || s.PingPushes != 1 || s.Errors != 2 {
		t.Fatalf("stats %+v", s)
	}
	if l.allCount[0] != 1 || l.allCount[1] != 1 || l.allCount[2] != 0 || l.allCount[3] != 1 {
		t.Fatalf("deliveries per broadcast %v", l.allCount[:4])
	}
	if l.allLast[1] < 5*ms || l.allLast[0] < 3*ms || l.allLast[0] > l.allLast[1] {
		t.Fatalf("last delivery per broadcast %v", l.allLast[:4])
	}
	if l.alat.TotalCount() != 4 {
		t.Fatalf("everyone latencies: %d samples, want 4 (duplicates too)", l.alat.TotalCount())
	}
	if got := l.allMissing(4); got != 1 {
		t.Fatalf("connections missing one of 4: %d, want 1", got)
	}
	if got := l.allMissing(3); got != 0 {
		t.Fatalf("connections missing one of 3: %d, want 0", got)
	}

	// The parent merges two workers: this loop and one that has broadcast 3.
	acc := newEveryoneAcc()
	m1 := message{AllLat: encodeHist(l.alat), AllLast: l.allLast, AllCount: l.allCount}
	other := make([]int64, maxAllBroadcasts)
	other[2] = 1
	last := make([]int64, maxAllBroadcasts)
	last[2] = 100 * ms
	m2 := message{AllLast: last, AllCount: other}
	for _, m := range []*message{&m1, &m2} {
		if err := acc.add(m); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Config{AllChannel: "bench:all", AllEvery: 10 * time.Second, Conns: 2}
	st := Stats{AllSubscribed: 2, AllSent: 4, AllReceived: 5, AllUnique: 4, AllDuplicates: 1, AllConnsMissing: 1}
	e := acc.result(&cfg, st, 4)
	if e.Expected != 8 || e.Missing != 4 || e.ConnsMissing != 1 || e.Latency.Count != 4 || len(e.Broadcasts) != 4 {
		t.Fatalf("everyone %+v", e)
	}
	if e.Broadcasts[2].Deliveries != 1 || e.Broadcasts[2].Last != 100e3 || e.LastMax < 100e3 || e.LastMax > 100.2e3 {
		t.Fatalf("broadcasts %+v last max %g", e.Broadcasts, e.LastMax)
	}
	var b strings.Builder
	e.write(&b)
	if !strings.Contains(b.String(), "missing 4 (1 connections)") {
		t.Fatalf("summary:\n%s", b.String())
	}
}

func TestEveryoneReceiveAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under -race")
	}
	l, c := everyoneLoop(t)
	now := time.Now().UnixNano()
	fresh, dup := allPush(7, now), allPush(8, now)
	l.onMessage(c, opText, dup)
	plain := []byte(`{"channel":"bench:b1","offset":1,"data":{"t":` + itoa(now) + `,"s":1}}`)
	ping := []byte(`{"ping":{}}`)
	l.onMessage(c, opText, plain) // the per-channel bitmap's first word
	allocs := testing.AllocsPerRun(200, func() {
		c.allSeen[0] &^= 1 << 6 // broadcast 7 is new every time
		l.onMessage(c, opText, fresh)
		l.onMessage(c, opText, dup)
		l.onMessage(c, opText, plain)
		l.onMessage(c, opText, ping)
	})
	if allocs != 0 {
		t.Fatalf("everyone receive path allocates %.1f times per round", allocs)
	}
	if l.stats.AllDuplicates < 200 || l.stats.Errors != 0 {
		t.Fatalf("stats %+v", l.stats)
	}
}

// TestNodeDrainAccounting drives the client side of a node drain over a
// socket pair: a disconnect push 4001 then close 1001 is clean, a close
// without the push or an EOF is not; a ping frame is answered.
func TestNodeDrainAccounting(t *testing.T) {
	l, _ := everyoneLoop(t)
	l.serverDrain, l.stopping = true, true
	pair := func() (*conn, int) {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fds[1]) })
		c := &conn{fd: fds[0], role: roleSub, state: stOpen}
		l.conns[c.fd] = c
		l.stats.Open++
		return c, fds[1]
	}
	closeFrame := func(code int) (frameHeader, []byte) {
		return frameHeader{op: opClose, fin: true, length: 2}, []byte{byte(code >> 8), byte(code)}
	}
	clean, peer := pair()
	l.onFrame(clean, frameHeader{op: opPing, fin: true}, nil)
	buf := make([]byte, 64)
	if n, err := unix.Read(peer, buf); err != nil || n < 2 || buf[0] != 0x80|opPong {
		t.Fatalf("no pong for a ping: %d bytes %x %v", n, buf[:max(n, 0)], err)
	}
	l.onMessage(clean, opText, []byte(`{"disconnect":{"code":4001,"reason":"shutdown","reconnect":true}}`))
	h, p := closeFrame(1001)
	l.onFrame(clean, h, p)

	noPush, _ := pair()
	h, p = closeFrame(1001)
	l.onFrame(noPush, h, p)

	eof, _ := pair()
	l.onMessage(eof, opText, []byte(`{"disconnect":{"code":4001,"reason":"shutdown","reconnect":true}}`))
	l.closeConn(eof, errEOFTest)

	s := l.stats
	if s.PingFrames != 1 || s.DrainPushes != 2 || s.DrainClean != 1 || s.DrainOther != 2 || s.Dropped != 0 || s.Open != 0 || s.Disconnected != 0 {
		t.Fatalf("stats %+v", s)
	}
	if l.lastClose == 0 {
		t.Fatal("last close not recorded")
	}
}

var errEOFTest = errString("closed by server (EOF)")

type errString string

func (e errString) Error() string { return string(e) }

func TestValidateEveryoneAndNodes(t *testing.T) {
	base := Defaults()
	base.Mode, base.Channel, base.Channels, base.AllChannel = ModeBroadcast, "bench:room", 4, "bench:all"
	base.Duration, base.AllEvery = time.Minute, 10*time.Second
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		d, every time.Duration
		want     int
	}{{time.Minute, 10 * time.Second, 6}, {20 * time.Second, 5 * time.Second, 4}, {5 * time.Second, 10 * time.Second, 0},
		{5*time.Second + 1, 10 * time.Second, 1}, {21 * time.Second, 2 * time.Second, 10}} {
		cfg := base
		cfg.Duration, cfg.AllEvery = tc.d, tc.every
		if got := cfg.allBroadcasts(); got != tc.want {
			t.Errorf("%v every %v: %d broadcasts, want %d", tc.d, tc.every, got, tc.want)
		}
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"echo", func(c *Config) { c.Mode, c.Channels = ModeEcho, 1 }, "only for broadcast"},
		{"no namespace", func(c *Config) { c.AllChannel = "all" }, "namespace:name"},
		{"quote", func(c *Config) { c.AllChannel = `bench:"x` }, "namespace:name"},
		{"one of the channels", func(c *Config) { c.AllChannel = "bench:room-2" }, "also one of"},
		{"too often", func(c *Config) { c.AllEvery = time.Millisecond }, "under"},
		{"too many", func(c *Config) { c.AllEvery = 200 * time.Millisecond }, "at most 128"},
		{"pids and urls", func(c *Config) { c.NodePIDs, c.NodeMetrics = []int{100, 101}, []string{"http://x/metrics"} }, "one each"},
		{"pid 1", func(c *Config) { c.NodePIDs = []int{1} }, "not a server"},
		{"drain without pids", func(c *Config) { c.DrainNodes = true }, "needs --node-pids"},
		{"drain wait", func(c *Config) { c.NodePIDs, c.DrainNodes, c.DrainWait = []int{100}, true, 0 }, "drain-wait"},
	} {
		cfg := base
		tc.edit(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}

func TestKernelAndCluster(t *testing.T) {
	var k KernelStats
	parseSockstat([]byte("sockets: used 62\nTCP: inuse 36 orphan 1 tw 407 alloc 39 mem 125\nUDP: inuse 0 mem 0\n"), &k)
	parseMeminfo([]byte("MemTotal:       24000000 kB\nMemAvailable:   20000000 kB\nSlab:             369096 kB\nSUnreclaim:       149368 kB\n"), &k)
	if k.TCPInuse != 36 || k.TCPOrphan != 1 || k.TCPTimeWait != 407 || k.TCPAlloc != 39 || k.TCPMemPages != 125 ||
		k.Slab != 369096<<10 || k.SUnreclaim != 149368<<10 || k.MemAvailable != 20000000<<10 {
		t.Fatalf("kernel %+v", k)
	}
	nodes := []NodeStats{
		{PID: 10, RSSStart: 10 << 20, RSSReady: 20 << 20, RSSEnd: 21 << 20, GoroutinesReady: 40, GoroutinesEnd: 40},
		{PID: 11, RSSStart: 10 << 20, RSSReady: 18 << 20, RSSEnd: 19 << 20, GoroutinesReady: 40, GoroutinesEnd: 40},
	}
	c := summarizeCluster(nodes, 20<<10)
	if c.RSSStart != 20<<20 || c.RSSEnd != 40<<20 || c.RSSPerConn != 1024 || c.RSSPerConnFull != 2048 || !c.GoroutinesSame {
		t.Fatalf("cluster %+v", c)
	}
	nodes[1].GoroutinesEnd = 41
	if summarizeCluster(nodes, 1).GoroutinesSame {
		t.Fatal("a node whose goroutines grew counts as constant")
	}
}

// TestSubscribeRetry: a subscribe refused with 503 goes out again after a
// backoff and is not an error; one refused maxSubTries+1 times is.
func TestSubscribeRetry(t *testing.T) {
	l, _ := everyoneLoop(t)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[1])
	c := &conn{fd: fds[0], role: roleSub, state: stOpen, subPending: true, allPending: true}
	l.conns[c.fd] = c
	l.pendingSubs = 2
	refused := []byte(`{"id":1,"error":{"code":503,"message":"overloaded"}}`)
	now := time.Now().UnixNano()
	l.onJSON(c, now, refused)
	l.onJSON(c, now, []byte(`{"id":2,"error":{"code":503,"message":"overloaded"}}`))
	if len(l.retries) != 2 || l.stats.Errors != 0 || l.stats.SubRetries != 2 || l.pendingSubs != 2 || l.retryNext < now+retryBaseWait {
		t.Fatalf("retries %d next %d stats %+v pending %d", len(l.retries), l.retryNext-now, l.stats, l.pendingSubs)
	}
	if d := l.timeoutNs(now); d < retryBaseWait || d > 2*retryBaseWait {
		t.Fatalf("loop sleeps %dns with a retry due in %dns", d, l.retryNext-now)
	}
	l.runRetries(now) // nothing due yet
	if len(l.retries) != 2 {
		t.Fatalf("%d retries left before they are due", len(l.retries))
	}
	l.runRetries(now + 2*retryMaxWait)
	buf := make([]byte, 256)
	n, _ := unix.Read(fds[1], buf)
	if len(l.retries) != 0 || l.retryNext != 0 || n < 2*40 {
		t.Fatalf("after the backoff: %d retries left, %d bytes sent", len(l.retries), n)
	}
	l.onJSON(c, now, []byte(`{"id":1,"ok":true,"result":{}}`))
	l.onJSON(c, now, []byte(`{"id":2,"ok":true,"result":{}}`))
	if l.stats.Subscribed != 1 || l.stats.AllSubscribed != 2 || l.pendingSubs != 0 || l.stats.Errors != 0 {
		t.Fatalf("after the retries: %+v pending %d", l.stats, l.pendingSubs)
	}
	// Other refusals are errors at once; so is a 503 after maxSubTries.
	c.subPending, l.pendingSubs = true, 1
	l.onJSON(c, now, []byte(`{"id":1,"error":{"code":403,"message":"permission denied"}}`))
	c.subPending, l.pendingSubs, c.subTries = true, 1, maxSubTries
	l.onJSON(c, now, refused)
	if l.stats.Errors != 2 || l.pendingSubs != 0 || len(l.retries) != 0 {
		t.Fatalf("refusals: %+v pending %d retries %d", l.stats, l.pendingSubs, len(l.retries))
	}
}
