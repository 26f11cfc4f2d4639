package bench

import (
	"encoding/binary"
	"errors"
	"math"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsedge/wsedge/frame"
)

const (
	// attackTick is how often the attack loop dials, drips slowloris
	// bytes and ends connections past their Hold.
	attackTick = int64(10 * time.Millisecond)
	// attackReadMax bounds what one never-reading attacker reads when it
	// ends, looking for the server's close frame behind what was queued.
	attackReadMax = 1 << 20
	// streamBlock is the size of the repeated blocks attackers stream.
	streamBlock = 16 << 10
	// A server may read a stream as fast as it is written, so writing
	// until EAGAIN could keep the loop from ever returning to epoll. One
	// attacker streams at most pumpTurn per turn and the loop's attackers
	// tickBytes per tick (100 MB/s); the rest waits for the next tick.
	pumpTurn  = 64 << 10
	tickBytes = 1 << 20
)

// Attacker connection states.
const (
	atConnecting uint8 = iota
	atOpen
	atDone
)

// attacker is one hostile connection, owned by its loop's goroutine. It
// holds no buffer: what it writes are tails of its loop's shared templates.
type attacker struct {
	fd        int
	kind      uint8
	state     uint8
	upgraded  bool
	closeSent bool  // churn: our close frame is out
	waiting   bool  // on the loop's ready list
	born      int64 // unix nanos of the dial
	next      int64 // slowloris: when the next byte is due
	pre       []byte
	streamed  int64 // bytes of the kind's stream written after pre
	scan      respScan
}

// kindState is one kind's schedule and counts on a loop.
type kindState struct {
	want     int   // population to keep attacking (kept-up kinds)
	cap      int   // most open at once (per-second kinds)
	live     int   // open now
	interval int64 // ns between dials
	next     int64 // unix nanos of the next dial
	stats    AttackStats
}

// attackLoop runs a worker's attackers on a loop of their own, so their
// work does not delay the measured clients' sends and reads on theirs.
// Everything in it belongs to that loop's goroutine.
type attackLoop struct {
	l     *loop
	cfg   *AttackConfig
	conns map[int]*attacker
	kinds [numKinds]kindState
	// drip holds the slowloris attackers in the order their next byte is
	// due (each is appended with now+1s, so appending keeps it sorted);
	// byAge holds every attacker in dial order, for Hold. Both skip ended
	// attackers lazily.
	drip  []*attacker
	byAge []*attacker
	// ready holds attackers with more to stream than their turn allowed,
	// budget what the loop may still stream in this tick.
	ready    []*attacker
	budget   int
	on       bool
	nextTick int64
	src      uint64 // dials so far, to spread source addresses

	// Immutable templates the attackers write from.
	pre        [numKinds][]byte
	flood      []byte // history requests back to back
	floodReq   int    // bytes of one of them
	payload    []byte // stream payload for oversize and overflow
	closeFrame []byte
}

func newAttackLoop(l *loop) *attackLoop {
	w := l.w
	cfg := &w.cfg.Attack
	a := &attackLoop{l: l, cfg: cfg, conns: make(map[int]*attacker)}
	for k := range a.kinds {
		ks := &a.kinds[k]
		ks.stats.Kind = kindNames[k]
		if n := cfg.population(k); n > 0 {
			ks.want = share(n, w.index, w.count)
			// Refill at most the whole population per second, so a server
			// that refuses at once is not dialed in a tight loop.
			ks.interval = int64(time.Second) / int64(max(1, ks.want))
		}
		if r := cfg.rate(k) / float64(w.count); r > 0 {
			ks.cap = max(1, int(math.Ceil(r*cfg.Hold.Seconds())))
			ks.interval = int64(float64(time.Second) / r)
		}
	}
	a.buildTemplates()
	return a
}

// buildTemplates writes every byte the attackers send. Frames are masked
// with the key 0 (legal, and it leaves payloads as they are), so the same
// bytes serve every connection.
func (a *attackLoop) buildTemplates() {
	t := &a.l.w.t
	var key [24]byte
	newKey(key[:], &a.l.rng)
	req := appendUpgradeRequest(nil, t.host, t.path, key[:], Subprotocol, a.l.w.attackToken(), a.l.w.cfg.Auth.where())
	ch := strconv.AppendQuote(nil, a.l.w.cfg.ChannelName(0))
	var zero [4]byte
	for k := range a.pre {
		a.pre[k] = req
	}
	sub := append(append([]byte(`{"id":1,"op":"subscribe","channel":`), ch...), '}')
	a.pre[kindNoRead] = frame.AppendClientFrame(append([]byte{}, req...), true, frame.OpText, sub, zero)
	a.pre[kindOversize] = appendMaskedHeader(append([]byte{}, req...), true, frame.OpText, a.cfg.OversizeLen)
	ov := frame.AppendClientFrame(append([]byte{}, req...), false, frame.OpText, []byte("x"), zero)
	a.pre[kindOverflow] = appendMaskedHeader(ov, true, frame.OpContinuation, math.MaxInt64)

	hist := append([]byte(`{"id":2,"op":"history","channel":`), ch...)
	hist = append(append(hist, `,"limit":`...), strconv.Itoa(a.cfg.HistoryLimit)...)
	one := frame.AppendClientFrame(nil, true, frame.OpText, append(hist, '}'), zero)
	a.floodReq = len(one)
	for len(a.flood) < streamBlock {
		a.flood = append(a.flood, one...)
	}
	a.payload = make([]byte, streamBlock)
	for i := range a.payload {
		a.payload[i] = 'x'
	}
	a.closeFrame = frame.AppendClientFrame(nil, true, frame.OpClose, []byte{0x03, 0xe8}, zero)
}

// appendMaskedHeader appends a client frame header declaring length
// payload bytes, masked with the key 0, in the shortest length form (RFC
// 6455 5.2 requires it).
func appendMaskedHeader(dst []byte, fin bool, op frame.OpCode, length int64) []byte {
	b0 := byte(op)
	if fin {
		b0 |= 0x80
	}
	switch {
	case length < 126:
		dst = append(dst, b0, 0x80|byte(length))
	case length <= math.MaxUint16:
		dst = append(dst, b0, 0x80|126)
		dst = binary.BigEndian.AppendUint16(dst, uint16(length))
	default:
		dst = append(dst, b0, 0x80|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(length))
	}
	return append(dst, 0, 0, 0, 0)
}

// start begins the attacks (the measured phase began).
func (a *attackLoop) start(now int64) {
	a.on = true
	a.nextTick = now
	a.budget = tickBytes
	for k := range a.kinds {
		a.kinds[k].next = now
	}
}

// stop ends dialing and sending; the attackers stay open until end.
func (a *attackLoop) stop() { a.on = false }

// timeout returns when the loop must wake for the attackers (-1: never).
func (a *attackLoop) timeout() int64 {
	if !a.on {
		return -1
	}
	return a.nextTick
}

// tick dials, drips and expires; the loop calls it after every wakeup.
func (a *attackLoop) tick(now int64) {
	if !a.on || now < a.nextTick {
		return
	}
	a.nextTick = now + attackTick
	a.budget = tickBytes
	a.expire(now)
	a.dripBytes(now)
	// Those the budget does not reach stay in front for the next tick;
	// those that had their turn queue again behind them.
	n, i := len(a.ready), 0
	for ; i < n && a.budget > 0; i++ {
		c := a.ready[i]
		c.waiting = false
		if c.state == atOpen {
			a.pump(c)
		}
	}
	a.ready = a.ready[:copy(a.ready, a.ready[i:])]
	for k := range a.kinds {
		a.dialKind(k, now)
	}
}

func (a *attackLoop) dialKind(k int, now int64) {
	ks := &a.kinds[k]
	limit := ks.want + ks.cap // one of them is 0
	for ks.live < limit && now >= ks.next {
		ks.next += ks.interval
		if ks.next < now-int64(time.Second) {
			ks.next = now // behind by more than a second: do not burst to catch up
		}
		a.dial(k, now)
	}
}

func (a *attackLoop) dial(k int, now int64) {
	ks := &a.kinds[k]
	ks.stats.Dialed++
	var src [4]byte
	if a.l.w.t.loopback {
		src = [4]byte{127, 1, 0, byte(1 + a.src%uint64(a.cfg.Sources))}
		a.src++
	}
	rcvbuf := 0
	if k == kindNoRead || k == kindFlood {
		rcvbuf = slowRcvBuf
	}
	fd, err := a.l.openSocket(&a.l.w.t, rcvbuf, src)
	if err != nil {
		ks.stats.outcome(errOutcome(err))
		return
	}
	c := &attacker{fd: fd, kind: uint8(k), born: now}
	a.conns[fd] = c
	ks.live++
	a.byAge = append(a.byAge, c)
	if err := a.l.watch(fd); err != nil {
		a.finish(c, errOutcome(err))
	}
}

// onEvent handles epoll events for c.
func (a *attackLoop) onEvent(c *attacker, ev uint32) {
	if c.state == atConnecting {
		if soErr, err := unix.GetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || soErr != 0 {
			if err == nil {
				err = unix.Errno(soErr)
			}
			a.finish(c, errOutcome(err))
			return
		}
		c.state = atOpen
		c.pre = a.pre[c.kind]
		if c.kind == kindSlowloris {
			a.dripOne(c, nowNanos())
		} else {
			a.pump(c)
		}
		if c.state == atDone {
			return
		}
	}
	hangup := ev&(unix.EPOLLHUP|unix.EPOLLERR|unix.EPOLLRDHUP) != 0
	if c.kind == kindNoRead || c.kind == kindFlood {
		// They never read; a hangup is the one thing they look at.
		if hangup {
			a.end(c, attackReadMax, "reset")
		}
	} else if hangup || ev&unix.EPOLLIN != 0 {
		if out := a.drain(c, math.MaxInt); out != "" {
			a.finish(c, out)
			return
		}
		if c.kind == kindChurn && c.upgraded && !c.closeSent {
			c.closeSent = true
			c.pre = a.closeFrame
		}
	}
	if c.state == atOpen && (ev&unix.EPOLLOUT != 0 || len(c.pre) > 0) {
		a.pump(c)
	}
}

// drain reads what the server sent c, at most budget bytes, and returns
// the outcome once one is known, else "".
func (a *attackLoop) drain(c *attacker, budget int) string {
	l := a.l
	for budget > 0 {
		n, err := unix.Read(c.fd, l.rbuf[:min(len(l.rbuf), budget)])
		switch {
		case n > 0:
			budget -= n
			out := c.scan.feed(l.rbuf[:n])
			if c.scan.status == 101 && !c.upgraded {
				c.upgraded = true
				a.kinds[c.kind].stats.Upgraded++
			}
			if out != "" {
				return out
			}
		case err == nil:
			return "eof"
		case errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.EAGAIN):
			return ""
		default:
			return errOutcome(err)
		}
	}
	return ""
}

// end reads what c has been sent (up to budget bytes) to learn how it
// ended and closes it; fallback is its outcome if the reading tells
// nothing.
func (a *attackLoop) end(c *attacker, budget int, fallback string) {
	out := a.drain(c, budget)
	if out == "" {
		out = fallback
	}
	a.finish(c, out)
}

// pump writes c's preamble and then, while the attack is on, its stream,
// as far as the socket and the budgets (pumpTurn, tickBytes) allow; what
// the budgets hold back goes out on the next tick.
func (a *attackLoop) pump(c *attacker) {
	if c.kind == kindSlowloris {
		return // it drips
	}
	ks := &a.kinds[c.kind]
	turn := pumpTurn
	for {
		b := c.pre
		if len(b) == 0 {
			if !a.on {
				return
			}
			if b = a.stream(c); len(b) == 0 {
				return
			}
			if turn = min(turn, a.budget); turn <= 0 {
				if !c.waiting {
					c.waiting = true
					a.ready = append(a.ready, c)
				}
				return
			}
			b = b[:min(len(b), turn)]
		}
		n, err := unix.Write(c.fd, b)
		if n > 0 {
			ks.stats.BytesOut += int64(n)
			if len(c.pre) > 0 {
				c.pre = c.pre[n:]
				continue
			}
			if c.kind == kindFlood {
				ks.stats.Requests += (c.streamed+int64(n))/int64(a.floodReq) - c.streamed/int64(a.floodReq)
			}
			c.streamed += int64(n)
			turn -= n
			a.budget -= n
			continue
		}
		switch {
		case errors.Is(err, unix.EAGAIN):
			return
		case errors.Is(err, unix.EINTR):
		default:
			a.end(c, attackReadMax, errOutcome(err))
			return
		}
	}
}

// stream returns the next bytes of c's stream, or nil when it has none.
func (a *attackLoop) stream(c *attacker) []byte {
	switch c.kind {
	case kindFlood:
		return a.flood[c.streamed%int64(len(a.flood)):]
	case kindOversize, kindOverflow:
		left := a.cfg.StreamMax - c.streamed
		if c.kind == kindOversize {
			left = min(left, a.cfg.OversizeLen-c.streamed)
		}
		if left <= 0 {
			return nil
		}
		b := a.payload[c.streamed%int64(len(a.payload)):]
		return b[:min(int64(len(b)), left)]
	}
	return nil
}

// dripBytes sends the slowloris attackers whose next byte is due theirs.
func (a *attackLoop) dripBytes(now int64) {
	i := 0
	for ; i < len(a.drip); i++ {
		c := a.drip[i]
		if c.state == atDone {
			continue
		}
		if c.next > now {
			break
		}
		a.dripOne(c, now)
	}
	a.drip = a.drip[:copy(a.drip, a.drip[i:])]
}

// dripOne writes c's next request byte and schedules the one after.
func (a *attackLoop) dripOne(c *attacker, now int64) {
	n, err := unix.Write(c.fd, c.pre[:1])
	switch {
	case n == 1:
		a.kinds[c.kind].stats.BytesOut++
		c.pre = c.pre[1:]
	case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
	default:
		a.end(c, attackReadMax, errOutcome(err))
		return
	}
	if len(c.pre) > 0 {
		c.next = now + int64(time.Second)
		a.drip = append(a.drip, c)
	}
}

// expire ends the attackers that have lived for Hold.
func (a *attackLoop) expire(now int64) {
	hold := int64(a.cfg.Hold)
	i := 0
	for ; i < len(a.byAge); i++ {
		c := a.byAge[i]
		if c.state == atDone {
			continue
		}
		if c.born+hold > now {
			break
		}
		a.end(c, attackReadMax, "held")
	}
	a.byAge = a.byAge[:copy(a.byAge, a.byAge[i:])]
}

// endAll ends every attacker still open, once the run is over.
func (a *attackLoop) endAll() {
	a.on = false
	for _, c := range a.conns {
		a.end(c, attackReadMax, "held")
	}
	a.drip, a.byAge, a.ready = nil, nil, nil
}

// closeAll closes every attacker without counting it: the loop is quitting
// before the run collected its figures.
func (a *attackLoop) closeAll() {
	for fd := range a.conns {
		unix.Close(fd)
	}
	clear(a.conns)
}

// conn returns the attacker on fd, or nil; a may be nil (not an attack loop).
func (a *attackLoop) conn(fd int) *attacker {
	if a == nil {
		return nil
	}
	return a.conns[fd]
}

// finish closes c and records its outcome; the one place an attacker ends.
func (a *attackLoop) finish(c *attacker, outcome string) {
	if c.state == atDone {
		return
	}
	c.state = atDone
	delete(a.conns, c.fd)
	unix.Close(c.fd)
	c.fd = -1
	ks := &a.kinds[c.kind]
	ks.live--
	ks.stats.outcome(outcome)
}

// snapshot copies the stats of the kinds configured.
func (a *attackLoop) snapshot() []AttackStats {
	var out []AttackStats
	for k := range a.kinds {
		ks := &a.kinds[k]
		if ks.want == 0 && ks.cap == 0 {
			continue
		}
		var s AttackStats
		s.Kind = ks.stats.Kind
		s.add(&ks.stats)
		out = append(out, s)
	}
	return out
}

func (s *AttackStats) outcome(o string) {
	if s.Outcomes == nil {
		s.Outcomes = make(map[string]int64)
	}
	s.Outcomes[o]++
}

// errOutcome names a local or socket error as an outcome.
func errOutcome(err error) string {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return "error " + err.Error()
	}
	switch errno {
	case unix.ECONNRESET, unix.EPIPE:
		return "reset"
	}
	if name := unix.ErrnoName(errno); name != "" {
		return "error " + name
	}
	return "error " + errno.Error()
}
