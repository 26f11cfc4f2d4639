package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// Messages between the parent and a worker (in-process over channels, or a
// child process as JSON lines on stdin/stdout).
const (
	msgProgress  = "progress"  // worker → parent, every second
	msgReady     = "ready"     // worker → parent: connections open
	msgPublished = "published" // worker 0 → parent: publishes acknowledged (N)
	msgDone      = "done"      // worker → parent: final stats and histograms
	msgError     = "error"     // worker → parent: the worker failed
	msgExit      = "exit"      // the worker's goroutine or process ended (synthesised)
	msgStart     = "start"     // parent → worker: begin measuring
	msgStop      = "stop"      // parent → worker: duration over, drain
	msgExpect    = "expect"    // parent → worker: deliveries to expect per subscriber (N)
	msgHeld      = "held"      // worker → parent: drained, connections still open (--drain-nodes)
	msgNodeDrain = "nodedrain" // parent → worker: the nodes got SIGTERM
)

// message is the one type both directions use.
type message struct {
	Type   string `json:"type"`
	Worker int    `json:"worker"`
	Stats  Stats  `json:"stats"`
	N      int64  `json:"n,omitempty"`
	// Per is N per broadcast channel (published, expect).
	Per []int64 `json:"per,omitempty"`
	Err string  `json:"err,omitempty"`
	// Encoded histograms: Lat is the interval histogram in progress
	// messages and the whole run in done; Conn is connect+upgrade times, Lag
	// the lateness of paced sends.
	Lat  string `json:"lat,omitempty"`
	Conn string `json:"conn,omitempty"`
	Lag  string `json:"lag,omitempty"`
	// Ping is the ping round trips (broadcast --ping-rate), Attacks what
	// became of the attackers (done only).
	Ping    string        `json:"ping,omitempty"`
	Attacks []AttackStats `json:"attacks,omitempty"`
	// RSS is the worker process's own resident memory in bytes with its
	// connections open, RSSBase the same before it dialed (done only).
	RSS     int64 `json:"rss,omitempty"`
	RSSBase int64 `json:"rss_base,omitempty"`
	// CPU is the CPU time the worker process used in the measured phase and
	// drain, in seconds (done only).
	CPU float64 `json:"cpu_s,omitempty"`
	// Tokens describes the tokens the worker minted (done only).
	Tokens *TokenStats `json:"tokens,omitempty"`
	// The everyone broadcast: acknowledged broadcasts (published, expect),
	// and (done only) the encoded latencies, per broadcast the latest
	// delivery's latency (ns) and the deliveries.
	AllN     int64   `json:"all_n,omitempty"`
	AllLat   string  `json:"all_lat,omitempty"`
	AllLast  []int64 `json:"all_last,omitempty"`
	AllCount []int64 `json:"all_count,omitempty"`
	// FirstDial and LastOpen (ready): unix nanos of the worker's first dial
	// and of its last completed upgrade while opening. LastClose (done):
	// of the last connection a draining node closed.
	FirstDial int64 `json:"first_dial,omitempty"`
	LastOpen  int64 `json:"last_open,omitempty"`
	LastClose int64 `json:"last_close,omitempty"`
	// Spec is the child's assignment, in the first line the parent sends.
	Spec *childSpec `json:"spec,omitempty"`
}

// worker runs one process's share of a run on its loops.
type worker struct {
	cfg   Config
	t     target   // the first URL's (attackers use it)
	subT  []target // subscribers' targets, in turn per channel
	pubT  target   // the broadcast publishers'
	index int
	count int
	conns int // this worker's connections (subscribers in broadcast)
	slow  int // this worker's slow subscribers
	// names holds each broadcast channel's name as a JSON string.
	names [][]byte
	loops []*loop
	// connLoops is how many loops carry the connections; a loop after them
	// only carries the broadcast publisher.
	connLoops int
	// Authentication: every connection's own token (nil without
	// --token-key), else the one token all send (empty for none); the
	// subscribed pushes each connection is owed; whether connections
	// offer the subprotocol.
	tokens      *tokenSet
	token       []byte
	subsPerConn int
	proto       bool
	// allPfx is how a delivery of the all channel starts (nil without one).
	allPfx []byte
}

// tokenPos returns the token of connection i of kind k, -1 if there is
// no token per connection.
func (w *worker) tokenPos(k, i int) int32 {
	if w.tokens == nil {
		return -1
	}
	return w.tokens.pos(k, i)
}

// attackToken is what every attacker sends: the run's one token, or one
// minted for a user of its own.
func (w *worker) attackToken() []byte {
	if w.tokens != nil {
		return w.tokens.attack
	}
	return w.token
}

// tokenRanges says which connections of each kind this worker opens, and
// their global numbers. Connect mode reuses a slot's token for each of
// its handshakes in turn; a slot is one of the --conns handshakes in
// flight, numbered across the loops of every process.
func (w *worker) tokenRanges() (r [numTokKinds]tokenRange) {
	cfg := &w.cfg
	if cfg.Mode == ModeConnect {
		n := w.count * w.connLoops
		lo := shareStart(cfg.Conns, w.index*w.connLoops, n)
		r[tokMeasured] = tokenRange{lo: lo, id: lo, n: shareStart(cfg.Conns, (w.index+1)*w.connLoops, n) - lo}
		return r
	}
	lo := shareStart(cfg.Conns, w.index, w.count)
	r[tokMeasured] = tokenRange{lo: lo, id: lo, n: w.conns}
	lo = shareStart(cfg.Slow, w.index, w.count)
	r[tokSlow] = tokenRange{lo: lo, id: cfg.Conns + lo, n: w.slow}
	if cfg.Mode == ModeBroadcast && w.index == 0 {
		n := cfg.publishers()
		if cfg.AllChannel != "" {
			n++ // the all publisher's token follows the publishers'
		}
		r[tokPub] = tokenRange{id: cfg.Conns + cfg.Slow, n: n}
	}
	return r
}

// setupAuth mints the worker's tokens, if it has a key, before any loop
// runs: minting is not part of what a run measures.
func (w *worker) setupAuth() error {
	cfg := &w.cfg
	w.proto = cfg.offersProtocol()
	w.subsPerConn = min(255, cfg.Auth.subsPerConn())
	if cfg.Auth.Token != "" {
		w.token = []byte(cfg.Auth.Token)
	}
	if cfg.Auth.Key == "" {
		return nil
	}
	ts, err := newTokenSet(&cfg.Auth, w.tokenRanges(), cfg.Attack.any())
	if err != nil {
		return err
	}
	w.tokens = ts
	return nil
}

// chanJSON returns channel i's name as a JSON string.
func (w *worker) chanJSON(i int) []byte {
	if w.names == nil {
		w.names = make([][]byte, w.cfg.Channels)
		for j := range w.names {
			w.names[j] = strconv.AppendQuote(nil, w.cfg.ChannelName(j))
		}
	}
	return w.names[i]
}

// setupStall ends the wait for connections to open and subscribe once
// nothing has changed for this long after the last dial ended.
const setupStall = 15 * time.Second

// shareStart returns the index of the first item of part i when n items
// are spread over k parts by share.
func shareStart(n, i, k int) int {
	return i*(n/k) + min(i, n%k)
}

// share returns worker i's part of n spread over k workers.
func share(n, i, k int) int {
	s := n / k
	if i < n%k {
		s++
	}
	return s
}

// runWorker runs worker index of count. It reads commands from in, writes
// events to out, and returns when the run is over (done sent) or ctx ends.
func runWorker(ctx context.Context, cfg Config, index, count int, in <-chan message, out chan<- message) error {
	ts, err := cfg.targets()
	if err != nil {
		return err
	}
	w := &worker{cfg: cfg, t: ts[0], subT: ts[:len(ts)-1], pubT: ts[len(ts)-1], index: index, count: count, conns: share(cfg.Conns, index, count),
		slow: share(cfg.Slow, index, count)}
	if cfg.Mode == ModeBroadcast {
		w.chanJSON(0) // build the names here, not on a loop
		if cfg.AllChannel != "" {
			w.allPfx = w.allPrefix()
		}
	}
	// The broadcast publisher gets a loop of its own so its sends leave on
	// time however busy the subscriber loops are.
	w.connLoops = cfg.loops()
	if err := w.setupAuth(); err != nil {
		return err
	}
	total := w.connLoops
	if cfg.Mode == ModeBroadcast && index == 0 {
		total++
	}
	for i := 0; i < total; i++ {
		l, err := newLoop(w, i)
		if err != nil {
			w.quit()
			return err
		}
		w.loops = append(w.loops, l)
	}
	if cfg.Attack.any() {
		l, err := newLoop(w, total)
		if err != nil {
			w.quit()
			return err
		}
		l.atk = newAttackLoop(l)
		w.loops = append(w.loops, l)
	}
	for _, l := range w.loops {
		go l.run()
	}
	defer w.quit()
	return w.drive(ctx, in, out)
}

func (w *worker) quit() {
	for _, l := range w.loops {
		if l.done == nil {
			continue
		}
		l.post(func() { l.quit = true })
	}
	for _, l := range w.loops {
		<-l.done
	}
}

// each runs fn on every loop and waits.
func (w *worker) each(fn func(l *loop)) {
	for _, l := range w.loops {
		l.call(func() { fn(l) })
	}
}

// snapshot sums the loops' stats; with interval it also takes and resets
// their interval histograms.
func (w *worker) snapshot(interval bool) (Stats, *hdr.Histogram) {
	var s Stats
	var h *hdr.Histogram
	if interval {
		h = newHist()
	}
	w.each(func(l *loop) {
		ls := l.stats
		ls.Pending = int64(l.pendingDials + l.inflight + l.pendingSubs)
		ls.Pending += int64(l.pendingPub + l.pendingAll)
		s.add(ls)
		if interval {
			h.Merge(l.ilat)
			l.ilat.Reset()
		}
	})
	return s, h
}

func (w *worker) drive(ctx context.Context, in <-chan message, out chan<- message) error {
	cfg := &w.cfg
	send := func(m message) bool {
		m.Worker = w.index
		select {
		case out <- m:
			return true
		case <-ctx.Done():
			return false
		}
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	lastProgress := time.Now()
	progress := func(force bool) bool {
		if !force && time.Since(lastProgress) < time.Second {
			return true
		}
		lastProgress = time.Now()
		s, h := w.snapshot(true)
		return send(message{Type: msgProgress, Stats: s, Lat: encodeHist(h)})
	}

	// Open connections.
	rssBase := readSelfRSS()
	n := w.connLoops
	for i, l := range w.loops {
		if l.atk != nil {
			continue // attackers dial when the measured phase starts
		}
		k, slow, pub := 0, 0, i >= n
		subBase, slowBase := 0, 0
		if !pub {
			k = share(w.conns, i, n)
			slow = share(w.slow, i, n)
			subBase = shareStart(cfg.Conns, w.index, w.count) + shareStart(w.conns, i, n)
			slowBase = shareStart(cfg.Slow, w.index, w.count) + shareStart(w.slow, i, n)
		}
		var interval int64
		if cfg.ConnectRate > 0 {
			interval = int64(float64(time.Second) * float64(w.count*n) / cfg.ConnectRate)
		}
		l.post(func() {
			switch cfg.Mode {
			case ModeIdle:
				l.dialRole = roleIdle
			case ModeEcho:
				l.dialRole = roleEcho
			case ModeBroadcast:
				l.dialRole = roleSub
			case ModeConnect:
				return // connect mode dials when started
			}
			l.pendingDials = k + slow
			l.pendingSlow = slow
			l.subNext, l.slowNext = subBase, slowBase
			if pub {
				l.pendingPub = cfg.publishers()
				l.pendingDials += l.pendingPub
				if cfg.AllChannel != "" {
					l.pendingAll = 1
					l.pendingDials++
				}
			}
			l.dialInterval = interval
			l.nextDial = nowNanos()
		})
	}
	setupDeadline := time.Now().Add(cfg.SetupTimeout)
	lastPending, lastChange := int64(-1), time.Now()
	for {
		s, _ := w.snapshot(false)
		if s.Pending == 0 || time.Now().After(setupDeadline) {
			break
		}
		// Every dial has ended and nothing moved for setupStall: what is
		// still pending (a subscribed push the server never sends) will
		// not come; the run goes on and reports it.
		if s.Pending != lastPending {
			lastPending, lastChange = s.Pending, time.Now()
		} else if s.Dialed == s.Connected+s.ConnectFailed && time.Since(lastChange) > setupStall {
			break
		}
		if !progress(false) {
			return ctx.Err()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m, ok := <-in:
			if !ok || m.Type == msgStop {
				return nil
			}
		case <-tick.C:
		}
	}
	s, _ := w.snapshot(false)
	ready := message{Type: msgReady, Stats: s}
	w.each(func(l *loop) {
		if l.firstDial != 0 && (ready.FirstDial == 0 || l.firstDial < ready.FirstDial) {
			ready.FirstDial = l.firstDial
		}
		ready.LastOpen = max(ready.LastOpen, l.lastOpen)
	})
	if !send(ready) {
		return ctx.Err()
	}

	// Wait for the start, then measure until stopped. The worker's own
	// deadline only guards against a parent that went away.
	for started := false; !started; {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m, ok := <-in:
			if !ok || m.Type == msgStop {
				return nil
			}
			started = m.Type == msgStart
		}
	}
	cpu0, _ := readCPU(os.Getpid())
	w.each(func(l *loop) { l.start() })
	progress(true)
	guard := time.NewTimer(cfg.Duration + 30*time.Second)
	defer guard.Stop()
	var expect []int64 // deliveries owed per subscriber, per channel; nil until known
	allN := int64(-1)  // everyone broadcasts owed per subscriber; -1 until known
	for stopped := false; !stopped; {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m, ok := <-in:
			if !ok {
				return nil
			}
			switch m.Type {
			case msgStop:
				stopped = true
			case msgExpect:
				expect, allN = m.Per, m.AllN
			}
		case <-guard.C:
			stopped = true
		case <-tick.C:
			if !progress(false) {
				return ctx.Err()
			}
		}
	}
	// The publisher's loop (the last) stops first: a stop posted behind busy
	// subscriber loops would let it publish past the measured phase.
	for i := len(w.loops) - 1; i >= 0; i-- {
		l := w.loops[i]
		l.call(l.stop)
	}

	// Drain: wait for what is still in flight, bounded by cfg.Drain.
	drainEnd := time.Now().Add(cfg.Drain)
	published := false
	for time.Now().Before(drainEnd) {
		s, _ := w.snapshot(false)
		if cfg.Mode == ModeBroadcast && w.index == 0 && !published && s.PublishOK+s.AllPublishOK+s.Errors >= s.Sent+s.AllSent {
			published = true
			if !send(message{Type: msgPublished, N: s.PublishOK, Per: w.publishedPer(), AllN: s.AllPublishOK}) {
				return ctx.Err()
			}
		}
		if w.drained(s, expect, allN) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m, ok := <-in:
			if !ok {
				return nil
			}
			if m.Type == msgExpect {
				expect, allN = m.Per, m.AllN
			}
		case <-tick.C:
			if !progress(false) {
				return ctx.Err()
			}
		}
	}
	if cfg.Mode == ModeBroadcast && w.index == 0 && !published {
		s, _ := w.snapshot(false)
		if !send(message{Type: msgPublished, N: s.PublishOK, Per: w.publishedPer(), AllN: s.AllPublishOK}) {
			return ctx.Err()
		}
	}
	if cfg.AllChannel != "" && allN < 0 {
		// The expectation may still be on its way from the parent.
		if m, ok := w.await(ctx, in, msgExpect, 5*time.Second); ok {
			allN = m.AllN
		}
	}
	if allN >= 0 {
		w.each(func(l *loop) { l.stats.AllConnsMissing = l.allMissing(allN) })
	}
	rssHeld := readSelfRSS() // with every connection still open
	if cfg.DrainNodes {
		if err := w.nodeDrain(ctx, in, send, progress, tick.C); err != nil {
			return err
		}
	}

	final := message{Type: msgDone}
	lat, conn, lag, ping, all := newHist(), newHist(), newHist(), newHist(), newHist()
	if cfg.AllChannel != "" {
		final.AllLast = make([]int64, maxAllBroadcasts)
		final.AllCount = make([]int64, maxAllBroadcasts)
	}
	w.each(func(l *loop) {
		all.Merge(l.alat)
		for i := range l.allLast {
			final.AllLast[i] = max(final.AllLast[i], l.allLast[i])
			final.AllCount[i] += l.allCount[i]
		}
		final.LastClose = max(final.LastClose, l.lastClose)
		if l.atk != nil {
			l.atk.endAll()
			final.Attacks = mergeAttacks(final.Attacks, l.atk.snapshot())
		}
		ls := l.stats
		ls.Pending = int64(l.pendingDials + l.inflight + l.pendingSubs)
		final.Stats.add(ls)
		lat.Merge(l.lat)
		conn.Merge(l.ctime)
		lag.Merge(l.lag)
		ping.Merge(l.plat)
	})
	final.Lat, final.Conn, final.Lag, final.Ping = encodeHist(lat), encodeHist(conn), encodeHist(lag), encodeHist(ping)
	final.AllLat = encodeHist(all)
	final.RSS, final.RSSBase = rssHeld, rssBase
	if ts := w.tokens; ts != nil {
		final.Tokens = &TokenStats{Alg: ts.alg.String(), In: cfg.Auth.where(), Count: int64(ts.len()),
			Bytes: int64(len(ts.arena)), MintSeconds: ts.took.Seconds()}
	}
	if cpu1, err := readCPU(os.Getpid()); err == nil {
		final.CPU = (cpu1 - cpu0).Seconds()
	}
	if !send(final) {
		return ctx.Err()
	}
	return nil
}

// publishedPer sums the loops' acknowledged publishes per channel.
func (w *worker) publishedPer() []int64 {
	per := make([]int64, w.cfg.Channels)
	w.each(func(l *loop) {
		for ch, n := range l.pubOK {
			per[ch] += n
		}
	})
	return per
}

// broadcastDrained reports whether every subscriber has every delivery it
// is owed (expect per channel) and every ping its reply, and every slow
// subscriber is closed or has read nothing for slowSettle.
func (w *worker) broadcastDrained(s Stats, expect []int64, allN int64) bool {
	if len(expect) != w.cfg.Channels || (w.cfg.AllChannel != "" && allN < 0) {
		return false
	}
	var owed, allOwed int64
	settled := true
	now := nowNanos()
	w.each(func(l *loop) {
		for ch, n := range l.subsPer {
			owed += n * expect[ch]
		}
		allOwed += l.allSubs * max(0, allN)
		if l.slowLive > 0 && now-l.slowLastRead < slowSettle {
			settled = false
		}
	})
	return settled && s.Unique >= owed && s.AllUnique >= allOwed && s.Pongs+s.PingErrors >= s.Pings
}

// drained reports whether nothing the run waits for is still in flight.
func (w *worker) drained(s Stats, expect []int64, allN int64) bool {
	switch w.cfg.Mode {
	case ModeEcho:
		return s.Received >= s.Sent
	case ModeBroadcast:
		return w.broadcastDrained(s, expect, allN)
	case ModeConnect:
		return s.Pending == 0
	}
	return true
}

// start begins the measured phase on the loop.
func (l *loop) start() {
	l.running = true
	now := nowNanos()
	if l.atk != nil {
		l.atk.start(now)
		return
	}
	cfg := &l.w.cfg
	switch cfg.Mode {
	case ModeEcho:
		for _, c := range l.conns {
			if c.state == stOpen {
				l.startEcho(c, now)
			}
		}
	case ModeBroadcast:
		l.pubUntil = now + int64(cfg.Duration)
		for _, c := range l.conns {
			switch {
			case c.state != stOpen:
			case c.role == rolePub:
				l.startPaced(c, now, 0)
			case c.role == roleAllPub:
				l.startAll(c, now)
			case c.role == roleSub && cfg.PingRate > 0:
				l.startPing(c, now)
			}
		}
	case ModeConnect:
		slot := l.w.index*l.w.connLoops + l.id
		k := share(cfg.Conns, slot, l.w.count*l.w.connLoops)
		if l.w.tokens != nil {
			first := shareStart(cfg.Conns, slot, l.w.count*l.w.connLoops)
			l.freeTok = make([]int32, k)
			for j := range k {
				l.freeTok[j] = l.w.tokens.pos(tokMeasured, first+j)
			}
		}
		l.dialRole = roleCycle
		l.pendingDials = k
		l.maxInflight = k
		if cfg.Rate > 0 {
			l.dialInterval = int64(float64(time.Second) * float64(l.w.count*l.w.connLoops) / cfg.Rate)
		}
		l.nextDial = now
	}
}

// stop ends the measured phase: no new sends or dials.
func (l *loop) stop() {
	l.running = false
	l.stopping = true
	l.pace.clear()
	if l.atk != nil {
		l.atk.stop()
	}
	l.pendingDials = 0
	// Slow subscribers read again, to learn whether the server closed them.
	l.slowLastRead = nowNanos()
	for _, c := range l.conns {
		if c.quiet {
			c.quiet = false
			l.onReadable(c)
		}
	}
}

// childSpec is a child process's assignment.
type childSpec struct {
	Config Config `json:"config"`
	Index  int    `json:"index"`
	Count  int    `json:"count"`
}

func (s *childSpec) validate() error {
	if s.Count < 1 || s.Index < 0 || s.Index >= s.Count {
		return fmt.Errorf("bench: child %d of %d", s.Index, s.Count)
	}
	return s.Config.Validate()
}

// target returns the node a new connection of role goes to: publishers to
// the publish URL; subscriber i of channel i%Channels to URL
// (i/Channels)%len, so each channel's subscribers are spread over the
// nodes rather than each channel landing on one.
func (w *worker) target(role uint8, subNext, slowNext int) *target {
	if role == rolePub && w.pubT.port != 0 {
		return &w.pubT
	}
	if len(w.subT) <= 1 || role == rolePub {
		return &w.t
	}
	i := subNext
	if role == roleSlow {
		i = slowNext
	}
	return &w.subT[(i/max(1, w.cfg.Channels))%len(w.subT)]
}
