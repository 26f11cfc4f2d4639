package bench

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sys/unix"
)

// Connection states.
const (
	stConnecting uint8 = iota
	stHandshake
	stOpen
	stClosing // we sent a close frame and wait for the server's
	stClosed
)

// Connection roles.
const (
	roleIdle uint8 = iota
	roleEcho
	roleSub
	rolePub
	roleCycle // connect mode: connect, upgrade, close, repeat
	roleSlow  // broadcast --slow: subscribes, then reads nothing until stop
	// roleAllPub publishes the everyone broadcasts (--all-channel).
	roleAllPub
)

const (
	echoHeader       = 16 // send time (8 bytes) + sequence number (8 bytes)
	readBufSize      = 64 << 10
	maxFrame         = 16 << 20
	maxPendingOut    = 16 << 20
	setupInflight    = 256 // handshakes in flight per loop while opening
	maxTrackedSeq    = 1 << 24
	subscribeID      = 1
	keepReadBufBelow = 16 << 10
	// slowSettle: after the measured phase, slow subscribers read what the
	// server still sends them; they are done when closed or this quiet.
	slowSettle = 300 * int64(time.Millisecond)
)

// conn is one client connection. It belongs to its loop's goroutine. An idle
// open conn costs this struct plus its map entry: buffers are only allocated
// while a partial frame or unsent bytes are pending.
type conn struct {
	fd         int
	state      uint8
	role       uint8
	fragOp     byte
	subPending bool
	quiet      bool // a slow subscriber not reading (see roleSlow)
	// subsLeft counts the subscribed pushes still owed: the server
	// subscribes a connection to its token's subs at open.
	subsLeft uint8
	// allPending: the subscribe to the all channel awaits its reply;
	// allOK: it succeeded. discPush: a disconnect push (4001) came while
	// the nodes drain; drainCounted: its end was counted then.
	allPending   bool
	allOK        bool
	discPush     bool
	drainCounted bool
	subTries     uint8 // subscribes refused with 503 and sent again
	// ch is a subscriber's channel index, or a publisher's first channel;
	// a publisher sends to ch, ch+pubStride, … (pubCount channels) in turn.
	ch        int32
	pubStride int32
	pubCount  int32
	key       [24]byte
	tok       int32   // its token in the worker's tokenSet; -1: none of its own
	t         *target // the node it connects to
	start     int64   // unix nanos of socket()
	in        []byte
	out       []byte
	frag      []byte
	pace      *pacedItem
	seq       uint64
	// subscriber bookkeeping
	seen   []uint64
	maxSeq int64
	unique int64
	// allSeen: the everyone broadcasts received (bit n-1 for broadcast n).
	allSeen [2]uint64
}

// loop is one event loop: an epoll instance and the goroutine that waits on
// it. Everything in it is owned by that goroutine; other goroutines talk to
// it only through post.
type loop struct {
	w     *worker
	id    int
	epfd  int
	efd   int // eventfd: wakes the loop when tasks are posted
	mu    sync.Mutex
	tasks []func()
	quit  bool
	done  chan struct{}

	conns   map[int]*conn
	rbuf    []byte
	wbuf    []byte
	scratch []byte
	payload []byte // echo payload template
	rng     uint64
	pace    pacer

	// dialing
	pendingDials int
	pendingPub   int // publisher connections still to dial (part of pendingDials)
	pendingSlow  int // slow subscribers still to dial (part of pendingDials)
	pendingAll   int // the all publisher still to dial (part of pendingDials)
	pubNext      int // index of the next publisher connection
	subNext      int // global index of the next subscriber: its channel is subNext % Channels
	slowNext     int // the same for slow subscribers
	dialRole     uint8
	dialInterval int64
	nextDial     int64
	inflight     int
	maxInflight  int
	dialCount    uint64
	pendingSubs  int     // subscribe replies and subscribed pushes owed
	freeTok      []int32 // connect mode: the tokens of this loop's slots not in flight

	running  bool
	stopping bool
	// pubUntil ends the publishers' schedule (unix nanos): a publish due
	// after the measured phase is not sent even if the stop is late to
	// reach this loop.
	pubUntil int64

	subsPer      []int64 // subscribed (measured) subscribers per channel
	pubOK        []int64 // acknowledged publishes per channel
	slowLive     int     // open slow subscribers
	slowLastRead int64   // unix nanos of the last bytes a slow subscriber read

	// The everyone broadcast: subscribers of it on this loop, and per
	// broadcast (index n-1) the deliveries and the latest one's latency
	// (ns); sized before the loop runs.
	allSubs  int64
	allCount []int64
	allLast  []int64
	// serverDrain: the nodes are draining (--drain-nodes); lastClose is
	// when the last connection ended then (unix nanos).
	serverDrain bool
	lastClose   int64
	// firstDial and lastOpen: unix nanos of the loop's first dial and its
	// last completed upgrade while opening.
	firstDial, lastOpen int64

	// retries are subscribes refused with 503 to send again (retry.go);
	// retryNext is when the earliest is due (0: none).
	retries   []subRetry
	retryNext int64

	// atk is set on a worker's attack loop, which carries only attackers.
	atk *attackLoop

	stats Stats
	lat   *hdr.Histogram // whole run
	ilat  *hdr.Histogram // since the last progress snapshot
	ctime *hdr.Histogram // connect + upgrade time
	lag   *hdr.Histogram // how late paced sends went out
	plat  *hdr.Histogram // ping round trips (broadcast --ping-rate)
	alat  *hdr.Histogram // everyone broadcast deliveries
}

func newLoop(w *worker, id int) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("bench: epoll_create1: %w", err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("bench: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(efd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(efd)
		return nil, fmt.Errorf("bench: epoll_ctl eventfd: %w", err)
	}
	l := &loop{
		w:           w,
		id:          id,
		epfd:        epfd,
		efd:         efd,
		done:        make(chan struct{}),
		conns:       make(map[int]*conn),
		rbuf:        make([]byte, readBufSize),
		rng:         uint64(time.Now().UnixNano()) | 1 + uint64(id)<<32 + uint64(w.index)<<48,
		maxInflight: setupInflight,
		lat:         newHist(),
		ilat:        newHist(),
		ctime:       newHist(),
		lag:         newHist(),
		plat:        newHist(),
		alat:        newHist(),
	}
	if w.cfg.AllChannel != "" {
		l.allCount = make([]int64, maxAllBroadcasts)
		l.allLast = make([]int64, maxAllBroadcasts)
	}
	if w.cfg.Mode == ModeEcho {
		l.payload = make([]byte, w.cfg.Size)
		for i := echoHeader; i < len(l.payload); i++ {
			l.payload[i] = 'x'
		}
	}
	return l, nil
}

// post runs fn on the loop's goroutine. Safe from any goroutine.
func (l *loop) post(fn func()) {
	l.mu.Lock()
	l.tasks = append(l.tasks, fn)
	first := len(l.tasks) == 1
	l.mu.Unlock()
	if first {
		var one [8]byte
		binary.LittleEndian.PutUint64(one[:], 1)
		_, _ = unix.Write(l.efd, one[:]) // EAGAIN only if the counter is saturated: already awake
	}
}

// call runs fn on the loop and waits for it.
func (l *loop) call(fn func()) {
	ch := make(chan struct{})
	l.post(func() { fn(); close(ch) })
	select {
	case <-ch:
	case <-l.done:
	}
}

func (l *loop) runTasks() {
	var b [8]byte
	_, _ = unix.Read(l.efd, b[:])
	l.mu.Lock()
	tasks := l.tasks
	l.tasks = nil
	l.mu.Unlock()
	for _, fn := range tasks {
		fn()
	}
}

func nowNanos() int64 { return time.Now().UnixNano() }

// run is the loop's goroutine.
func (l *loop) run() {
	defer close(l.done)
	defer unix.Close(l.efd)
	defer unix.Close(l.epfd)
	events := make([]unix.EpollEvent, 512)
	for !l.quit {
		n, err := epollWait(l.epfd, events, l.timeoutNs(nowNanos()))
		if err != nil && !errors.Is(err, unix.EINTR) {
			l.stats.LastError = "epoll_wait: " + err.Error()
			l.stats.Errors++
			break
		}
		for i := 0; i < n; i++ {
			ev := events[i]
			fd := int(ev.Fd)
			if fd == l.efd {
				l.runTasks()
				continue
			}
			c := l.conns[fd]
			if c == nil {
				if a := l.atk.conn(fd); a != nil {
					l.atk.onEvent(a, ev.Events)
				}
				continue
			}
			if c.state == stConnecting {
				l.onConnected(c)
			}
			if c.state != stClosed && ev.Events&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLRDHUP|unix.EPOLLERR) != 0 &&
				(!c.quiet || ev.Events&(unix.EPOLLHUP|unix.EPOLLERR) != 0) {
				l.onReadable(c)
			}
			if c.state != stClosed && ev.Events&unix.EPOLLOUT != 0 && len(c.out) > 0 {
				l.flush(c)
			}
		}
		now := nowNanos()
		if l.pace.len() > 0 {
			l.pace.due(now, l.onDue)
		}
		l.dialMore(now)
		if l.retryNext != 0 && now >= l.retryNext {
			l.runRetries(now)
		}
		if l.atk != nil {
			l.atk.tick(now)
		}
	}
	for _, c := range l.conns {
		l.shutdown(c)
	}
	if l.atk != nil {
		l.atk.closeAll()
	}
}

// timeoutNs is how long epoll may sleep: until the next paced send or dial,
// or forever (-1; tasks wake the loop through the eventfd).
func (l *loop) timeoutNs(now int64) int64 {
	next := int64(-1)
	if it := l.pace.peek(); it != nil {
		next = it.next
	}
	if l.pendingDials > 0 && l.inflight < l.maxInflight {
		d := now
		if l.dialInterval > 0 {
			d = l.nextDial
		}
		if next < 0 || d < next {
			next = d
		}
	}
	if l.retryNext != 0 && (next < 0 || l.retryNext < next) {
		next = l.retryNext
	}
	if l.atk != nil {
		if d := l.atk.timeout(); d >= 0 && (next < 0 || d < next) {
			next = d
		}
	}
	if next < 0 {
		return -1
	}
	if next <= now {
		return 0
	}
	return next - now
}

func (l *loop) dialMore(now int64) {
	for l.pendingDials > 0 && l.inflight < l.maxInflight {
		if l.dialInterval > 0 {
			if now < l.nextDial {
				return
			}
			l.nextDial += l.dialInterval
			if l.nextDial < now-int64(time.Second) {
				l.nextDial = now
			}
		}
		l.pendingDials--
		role := l.dialRole
		switch {
		case l.pendingPub > 0:
			l.pendingPub--
			role = rolePub
		case l.pendingSlow > 0:
			l.pendingSlow--
			role = roleSlow
		case l.pendingAll > 0:
			l.pendingAll--
			role = roleAllPub
		}
		l.dial(now, role)
	}
}

func (l *loop) fail(err error) {
	l.stats.LastError = err.Error()
}

func (l *loop) dial(now int64, role uint8) {
	l.stats.Dialed++
	l.inflight++
	if l.firstDial == 0 {
		l.firstDial = now
	}
	c := &conn{fd: -1, state: stConnecting, role: role, start: now, tok: -1}
	c.t = l.w.target(role, l.subNext, l.slowNext)
	t := c.t
	// Assign the channel and token before anything can fail, so a failed
	// dial does not shift the round-robin of the ones after it. Channels
	// is 1 outside broadcast.
	cfg := &l.w.cfg
	switch role {
	case roleIdle, roleEcho, roleSub:
		c.ch = int32(l.subNext % cfg.Channels)
		c.tok = l.w.tokenPos(tokMeasured, l.subNext)
		l.subNext++
	case roleSlow:
		c.ch = int32(l.slowNext % cfg.Channels)
		c.tok = l.w.tokenPos(tokSlow, l.slowNext)
		l.slowNext++
	case rolePub:
		p := cfg.publishers()
		c.ch, c.pubStride, c.pubCount = int32(l.pubNext), int32(p), int32(share(cfg.Channels, l.pubNext, p))
		c.tok = l.w.tokenPos(tokPub, l.pubNext)
		l.pubNext++
	case roleAllPub:
		c.tok = l.w.tokenPos(tokPub, cfg.publishers())
	case roleCycle:
		if n := len(l.freeTok); n > 0 {
			c.tok = l.freeTok[n-1]
			l.freeTok = l.freeTok[:n-1]
		}
	}
	var src [4]byte
	if t.loopback {
		// Spread source addresses over 127.0.0.0/8 so a run does not
		// exhaust one address's ports.
		k := (uint64(l.w.index)*7919 + uint64(l.id)*104729 + l.dialCount) % uint64(l.w.cfg.Sources)
		l.dialCount++
		src = [4]byte{127, 0, 0, byte(2 + k)}
	}
	rcvbuf := 0
	if role == roleSlow {
		rcvbuf = slowRcvBuf
	}
	fd, err := l.openSocket(t, rcvbuf, src)
	if err != nil {
		l.inflight--
		l.stats.ConnectFailed++
		l.fail(err)
		l.releaseToken(c)
		return
	}
	c.fd = fd
	l.conns[fd] = c
	if err := l.watch(fd); err != nil {
		l.closeConn(c, err)
	}
}

func (l *loop) onConnected(c *conn) {
	soErr, err := unix.GetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err == nil && soErr != 0 {
		err = unix.Errno(soErr)
	}
	if err != nil {
		l.closeConn(c, fmt.Errorf("connect: %w", err))
		return
	}
	c.state = stHandshake
	newKey(c.key[:], &l.rng)
	w := l.w
	sub := ""
	if w.proto {
		sub = Subprotocol
	}
	tok := w.token
	if c.tok >= 0 {
		tok = w.tokens.get(c.tok)
	}
	l.wbuf = appendUpgradeRequest(l.wbuf[:0], c.t.host, c.t.path, c.key[:], sub, tok, w.cfg.Auth.where())
	if w.cfg.Deflate {
		l.wbuf = append(l.wbuf[:len(l.wbuf)-2], "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"...)
	}
	l.write(c, l.wbuf)
}

// releaseToken gives a connect-mode connection's token back to its slot
// pool for the next dial.
func (l *loop) releaseToken(c *conn) {
	if c.role == roleCycle && c.tok >= 0 {
		l.freeTok = append(l.freeTok, c.tok)
		c.tok = -1
	}
}

func (l *loop) onReadable(c *conn) {
	for {
		n, err := unix.Read(c.fd, l.rbuf)
		if n > 0 {
			l.stats.BytesIn += int64(n)
			if c.role == roleSlow {
				l.slowLastRead = nowNanos()
			}
			if !l.consume(c, l.rbuf[:n]) {
				return
			}
			if n < len(l.rbuf) {
				return // drained: with edge triggering new data raises a new edge
			}
			continue
		}
		switch {
		case err == nil:
			l.closeConn(c, errors.New("closed by server (EOF)"))
			return
		case errors.Is(err, unix.EAGAIN):
			return
		case errors.Is(err, unix.EINTR):
			continue
		default:
			l.closeConn(c, fmt.Errorf("read: %w", err))
			return
		}
	}
}

// consume handles bytes read from c. It returns false if c was closed.
func (l *loop) consume(c *conn, data []byte) bool {
	buf := data
	fromIn := len(c.in) > 0
	if fromIn {
		c.in = append(c.in, data...)
		buf = c.in
	}
	off := 0
	if c.state == stHandshake {
		n, status, ok := parseUpgradeResponse(buf, c.key[:])
		if n == 0 {
			if len(buf) > maxResponseHeader {
				l.closeConn(c, errors.New("upgrade response header too large"))
				return false
			}
			l.keep(c, buf, fromIn)
			return true
		}
		if !ok {
			if status != 0 && status != 101 {
				l.closeConn(c, fmt.Errorf("upgrade refused: HTTP %d", status))
			} else {
				l.closeConn(c, errors.New("bad upgrade response"))
			}
			return false
		}
		off = n
		l.onOpen(c)
		if c.state == stClosed {
			return false
		}
	}
	for off < len(buf) {
		h, ok := parseFrameHeader(buf[off:])
		if !ok {
			break
		}
		if h.length > maxFrame {
			l.stats.Errors++
			l.closeConn(c, fmt.Errorf("frame of %d bytes", h.length))
			return false
		}
		if len(buf)-off-h.hdrSize < h.length {
			break
		}
		payload := buf[off+h.hdrSize : off+h.hdrSize+h.length]
		off += h.hdrSize + h.length
		if h.masked {
			maskBytes(payload, h.key)
		}
		if !l.onFrame(c, h, payload) {
			return false
		}
	}
	l.keep(c, buf[off:], fromIn)
	return true
}

// keep stores the unconsumed tail of a read in c.in. fromIn says whether
// rest points into c.in (then it moves to the front) or into the loop's read
// buffer (then it is copied).
func (l *loop) keep(c *conn, rest []byte, fromIn bool) {
	switch {
	case len(rest) == 0 && cap(c.in) > keepReadBufBelow:
		c.in = nil
	case fromIn:
		c.in = c.in[:copy(c.in, rest)]
	default:
		c.in = append(c.in[:0], rest...)
	}
}

func (l *loop) onFrame(c *conn, h frameHeader, payload []byte) bool {
	switch h.op {
	case opText, opBinary:
		if !h.fin {
			c.frag = append(c.frag[:0], payload...)
			c.fragOp = h.op
			return true
		}
		l.onMessage(c, h.op, payload)
	case opContinuation:
		c.frag = append(c.frag, payload...)
		if h.fin {
			l.onMessage(c, c.fragOp, c.frag)
			c.frag = nil
		}
	case opPing:
		l.stats.PingFrames++
		l.wbuf = appendFrame(l.wbuf[:0], opPong, payload, &l.rng)
		return l.write(c, l.wbuf)
	case opPong:
	case opClose:
		if c.state == stClosing {
			l.closeConn(c, nil)
			return false
		}
		code := 0
		if len(payload) >= 2 {
			code = int(binary.BigEndian.Uint16(payload))
		}
		if c.role == roleSlow {
			l.stats.SlowCloseCode = int64(code)
		}
		if l.serverDrain && !c.drainCounted {
			c.drainCounted = true
			if c.discPush && code == 1001 {
				l.stats.DrainClean++
			} else {
				l.stats.DrainOther++
			}
		}
		l.wbuf = appendFrame(l.wbuf[:0], opClose, payload[:min(2, len(payload))], &l.rng)
		l.write(c, l.wbuf)
		l.closeConn(c, fmt.Errorf("closed by server with code %d", code))
		return false
	default:
		l.stats.Errors++
		l.closeConn(c, fmt.Errorf("unknown opcode %d", h.op))
		return false
	}
	return c.state != stClosed
}

func (l *loop) onOpen(c *conn) {
	now := nowNanos()
	c.state = stOpen
	l.stats.Connected++
	l.stats.Open++
	record(l.ctime, now-c.start)
	if c.role != roleCycle {
		l.lastOpen = now
		l.inflight--
		if n := l.w.subsPerConn; n > 0 {
			c.subsLeft = uint8(n)
			l.pendingSubs += n
		}
	}
	switch c.role {
	case roleEcho:
		if l.running {
			l.startEcho(c, now)
		}
	case roleSub, roleSlow:
		if c.role == roleSlow {
			l.slowLive++
		}
		l.pendingSubs++
		c.subPending = true
		if l.sendSubscribe(c, false) && c.role == roleSub && l.w.cfg.AllChannel != "" {
			l.subscribeAll(c)
		}
	case rolePub:
		if l.running {
			l.startPaced(c, now, 0)
		}
	case roleAllPub:
		if l.running {
			l.startAll(c, now)
		}
	case roleCycle:
		l.stats.Handshakes++
		record(l.lat, now-c.start)
		record(l.ilat, now-c.start)
		l.closeWS(c)
	}
}

// closeWS starts the close handshake.
func (l *loop) closeWS(c *conn) {
	c.state = stClosing
	l.wbuf = appendFrame(l.wbuf[:0], opClose, []byte{0x03, 0xe8}, &l.rng) // 1000
	l.write(c, l.wbuf)
}

func (l *loop) sendText(c *conn, msg []byte) bool {
	l.scratch = appendFrame(l.scratch[:0], opText, msg, &l.rng)
	return l.write(c, l.scratch)
}

func (l *loop) startEcho(c *conn, now int64) {
	if l.w.cfg.Rate == 0 {
		l.sendEcho(c)
		return
	}
	period := int64(float64(time.Second) / l.w.cfg.Rate)
	l.startPaced(c, now, int64(nextRand(&l.rng)%uint64(period)))
}

func (l *loop) startPaced(c *conn, now, phase int64) {
	rate := l.w.cfg.Rate
	if c.role == rolePub {
		rate *= float64(c.pubCount) // Rate is per channel
	}
	l.schedule(c, now, int64(float64(time.Second)/rate), phase)
}

// schedule puts c on the pacer: a send every period from now+phase.
func (l *loop) schedule(c *conn, now, period, phase int64) {
	if c.pace == nil {
		c.pace = &pacedItem{idx: -1, c: c}
	}
	c.pace.period = period
	c.pace.next = now + phase
	l.pace.push(c.pace)
}

func (l *loop) onDue(it *pacedItem, late int64) {
	if (it.c.role == rolePub || it.c.role == roleAllPub) && it.next-it.period >= l.pubUntil {
		l.pace.remove(it)
		return
	}
	record(l.lag, late)
	switch it.c.role {
	case roleEcho:
		l.sendEcho(it.c)
	case rolePub:
		l.sendPublish(it.c)
	case roleAllPub:
		l.sendAllPublish(it.c)
	case roleSub:
		l.sendPing(it.c)
	}
}

func (l *loop) sendEcho(c *conn) {
	p := l.payload
	binary.LittleEndian.PutUint64(p[0:], uint64(nowNanos()))
	binary.LittleEndian.PutUint64(p[8:], c.seq)
	c.seq++
	l.wbuf = appendFrame(l.wbuf[:0], opBinary, p, &l.rng)
	if l.write(c, l.wbuf) {
		l.stats.Sent++
	}
}

// publishPadding returns how many padding bytes make the data object
// {"t":…,"s":…,"p":"…"} about size bytes long.
func publishPadding(size int, t int64, seq uint64) int {
	n := len(`{"t":,"s":,"p":""}`) + len(strconv.AppendInt(nil, t, 10)) + len(strconv.AppendUint(nil, seq, 10))
	if size > n {
		return size - n
	}
	return 0
}

// sendPublish sends the publisher's next publish. Publish n of c (from 0)
// goes to channel pubChannel(c, n) with the per-channel sequence number
// n/pubCount+1, which the subscribers of that channel check for gaps and
// order; its id is n+2 (1 is the subscribe id).
func (l *loop) sendPublish(c *conn) {
	n := c.seq
	c.seq++
	seq := n/uint64(c.pubCount) + 1
	now := nowNanos()
	b := append(l.wbuf[:0], `{"id":`...)
	b = strconv.AppendUint(b, n+subscribeID+1, 10)
	b = append(b, `,"op":"publish","channel":`...)
	b = append(b, l.w.chanJSON(pubChannel(c, n))...)
	b = append(b, `,"data":{"t":`...)
	b = strconv.AppendInt(b, now, 10)
	b = append(b, `,"s":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"p":"`...)
	for i := publishPadding(l.w.cfg.Size, now, seq); i > 0; i-- {
		b = append(b, 'x')
	}
	b = append(b, `"}}`...)
	l.wbuf = b
	if l.sendText(c, b) {
		l.stats.Sent++
	}
}

// pubChannel is the channel of publisher c's publish n (from 0).
func pubChannel(c *conn, n uint64) int {
	return int(c.ch) + int(n%uint64(c.pubCount))*int(c.pubStride)
}

func (l *loop) onMessage(c *conn, op byte, msg []byte) {
	if op == opText && bytes.HasPrefix(msg, keySubscribed) {
		l.onSubscribed(c)
		return
	}
	if op == opText && bytes.Equal(msg, keyPingPush) {
		l.stats.PingPushes++
		return
	}
	if l.serverDrain && op == opText && bytes.HasPrefix(msg, keyDisc) {
		if code, _ := jsonInt(msg, keyCode); code == 4001 && !c.discPush {
			c.discPush = true
			l.stats.DrainPushes++
			return
		}
	}
	now := nowNanos()
	switch c.role {
	case roleEcho:
		if op != opBinary || len(msg) < echoHeader {
			l.stats.Errors++
			l.fail(fmt.Errorf("echo: unexpected message of %d bytes", len(msg)))
			return
		}
		sent := int64(binary.LittleEndian.Uint64(msg))
		record(l.lat, now-sent)
		record(l.ilat, now-sent)
		l.stats.Received++
		if l.running && l.w.cfg.Rate == 0 {
			l.sendEcho(c)
		}
	case roleSub, rolePub, roleSlow, roleAllPub:
		l.onJSON(c, now, msg)
	case roleIdle, roleCycle:
		l.stats.Received++
	}
}

var (
	keyID     = []byte(`"id":`)
	keyOK     = []byte(`"ok":true`)
	keyOffset = []byte(`"offset":`)
	keyT      = []byte(`"t":`)
	keyS      = []byte(`"s":`)
	keyLagged = []byte(`{"lagged":`)
	keyDisc   = []byte(`{"disconnect":`)
	// keySubscribed starts the push telling a connection that the server
	// subscribed it to a channel of its token's subs claim.
	keySubscribed = []byte(`{"subscribed":`)
)

// onSubscribed counts a subscribed push. An idle connection counts as
// subscribed once it has every push its token owes it.
func (l *loop) onSubscribed(c *conn) {
	l.stats.ServerSubs++
	if c.subsLeft == 0 {
		return // more than the token promised: counted, not waited for
	}
	c.subsLeft--
	l.pendingSubs--
	if c.subsLeft == 0 && c.role == roleIdle {
		l.stats.Subscribed++
	}
}

// jsonInt returns the integer after key in msg. The protocol's messages are
// flat enough that a key search is exact for the fields the bench reads. It
// does not allocate.
func jsonInt(msg, key []byte) (int64, bool) {
	i := bytes.Index(msg, key)
	if i < 0 {
		return 0, false
	}
	i += len(key)
	for i < len(msg) && msg[i] == ' ' {
		i++
	}
	neg := i < len(msg) && msg[i] == '-'
	if neg {
		i++
	}
	var v int64
	j := i
	for ; j < len(msg) && msg[j] >= '0' && msg[j] <= '9'; j++ {
		d := int64(msg[j] - '0')
		if v > (math.MaxInt64-d)/10 {
			return 0, false // overflows int64
		}
		v = v*10 + d
	}
	if j == i {
		return 0, false
	}
	if neg {
		v = -v
	}
	return v, true
}

func (l *loop) onJSON(c *conn, now int64, msg []byte) {
	if id, ok := jsonInt(msg, keyID); ok {
		good := bytes.Contains(msg, keyOK)
		if !good && c.role == roleSub && id == subscribeAllID && c.allPending && l.retrySubscribe(c, msg, true, now) {
			return
		}
		if !good && (c.role == roleSub || c.role == roleSlow) && id == subscribeID && c.subPending && l.retrySubscribe(c, msg, false, now) {
			return
		}
		if !good {
			l.stats.Errors++
			l.fail(fmt.Errorf("error reply: %.200s", msg))
		}
		switch {
		case c.role == roleSub && id == subscribeAllID && c.allPending:
			l.onAllReply(c, good)
		case c.role == roleAllPub && good && id > subscribeID:
			l.stats.AllPublishOK++
		case (c.role == roleSub || c.role == roleSlow) && id == subscribeID && c.subPending:
			c.subPending = false
			l.pendingSubs--
			switch {
			case !good:
			case c.role == roleSlow:
				l.stats.SlowSubscribed++
				c.quiet = !l.stopping // stop reading until the measured phase ends
			default:
				l.stats.Subscribed++
				l.countSub(int(c.ch))
			}
		case c.role == roleSub && id > subscribeID:
			l.onPong(now, id, good)
		case c.role == rolePub && good && id > subscribeID:
			l.stats.PublishOK++
			l.countPub(pubChannel(c, uint64(id-subscribeID-1)))
		}
		return
	}
	if c.role == roleSlow {
		return // not measured
	}
	if c.role == roleSub && bytes.HasPrefix(msg, keyLagged) {
		l.stats.Lagged++
		return
	}
	if c.role == roleSub && bytes.HasPrefix(msg, keyDisc) {
		// The close that follows counts the connection as dropped.
		l.stats.Disconnected++
		l.fail(fmt.Errorf("disconnect push: %.200s", msg))
		return
	}
	if c.role != roleSub {
		l.stats.Errors++
		l.fail(fmt.Errorf("unexpected push to publisher: %.200s", msg))
		return
	}
	if l.w.isAll(msg) {
		l.onAll(c, now, msg)
		return
	}
	if _, ok := jsonInt(msg, keyOffset); !ok {
		l.stats.Errors++
		l.fail(fmt.Errorf("push without offset: %.200s", msg))
		return
	}
	t, ok1 := jsonInt(msg, keyT)
	s, ok2 := jsonInt(msg, keyS)
	if !ok1 || !ok2 || s < 1 || s > maxTrackedSeq {
		l.stats.Errors++
		l.fail(fmt.Errorf("push without bench data: %.200s", msg))
		return
	}
	l.stats.Received++
	record(l.lat, now-t)
	record(l.ilat, now-t)
	w := int(s >> 6)
	if w >= len(c.seen) {
		c.seen = append(c.seen, make([]uint64, w+1-len(c.seen))...)
	}
	bit := uint64(1) << (s & 63)
	if c.seen[w]&bit != 0 {
		l.stats.Duplicates++
		return
	}
	c.seen[w] |= bit
	c.unique++
	l.stats.Unique++
	if s < c.maxSeq {
		l.stats.OutOfOrder++
	} else {
		c.maxSeq = s
	}
}

// countSub and countPub count per channel; the slices grow on first use.
func (l *loop) countSub(ch int) {
	if l.subsPer == nil {
		l.subsPer = make([]int64, l.w.cfg.Channels)
	}
	l.subsPer[ch]++
}

func (l *loop) countPub(ch int) {
	if l.pubOK == nil {
		l.pubOK = make([]int64, l.w.cfg.Channels)
	}
	l.pubOK[ch]++
}

// write sends b on c, queueing what the socket does not take. It returns
// false if c was closed.
func (l *loop) write(c *conn, b []byte) bool {
	if len(c.out) > 0 {
		if len(c.out)+len(b) > maxPendingOut {
			l.stats.Errors++
			l.closeConn(c, errors.New("server does not read: outbound buffer full"))
			return false
		}
		c.out = append(c.out, b...)
		return true
	}
	for len(b) > 0 {
		n, err := unix.Write(c.fd, b)
		if n > 0 {
			l.stats.BytesOut += int64(n)
			b = b[n:]
			continue
		}
		switch {
		case errors.Is(err, unix.EAGAIN):
			c.out = append(c.out, b...)
			return true
		case errors.Is(err, unix.EINTR):
		default:
			l.closeConn(c, fmt.Errorf("write: %w", err))
			return false
		}
	}
	return true
}

func (l *loop) flush(c *conn) {
	out := c.out
	c.out = nil
	if !l.write(c, out) {
		return
	}
	if len(c.out) > 0 && cap(out) >= len(c.out) {
		// reuse the old buffer for what is left
		n := copy(out, c.out)
		c.out = out[:n]
	}
}

// closeConn closes c. err nil means an orderly close the run asked for.
func (l *loop) closeConn(c *conn, err error) {
	if c.state == stClosed {
		return
	}
	prev := c.state
	c.state = stClosed
	delete(l.conns, c.fd)
	if c.pace != nil {
		l.pace.remove(c.pace)
	}
	unix.Close(c.fd)
	c.fd = -1
	c.in, c.out, c.frag, c.seen = nil, nil, nil, nil
	if c.subPending {
		c.subPending = false
		l.pendingSubs--
	}
	if c.allPending {
		c.allPending = false
		l.pendingSubs--
	}
	if l.serverDrain && prev >= stOpen && err != nil {
		l.lastClose = nowNanos()
		if !c.drainCounted {
			c.drainCounted = true
			l.stats.DrainOther++
		}
	}
	l.pendingSubs -= int(c.subsLeft)
	c.subsLeft = 0
	l.releaseToken(c)
	if prev >= stOpen {
		l.stats.Open--
	}
	if c.role == roleSlow && prev >= stOpen {
		l.slowLive--
		if err != nil {
			l.stats.SlowClosed++
		}
		return
	}
	if prev < stOpen || c.role == roleCycle {
		l.inflight--
	}
	if c.role == roleCycle && l.running {
		l.pendingDials++ // keep the window of handshakes in flight full
	}
	switch {
	case err == nil:
	case prev < stOpen:
		l.stats.ConnectFailed++
		l.fail(err)
	case prev == stClosing:
		// the server ended the close handshake its own way: still a close
	case !l.stopping:
		l.stats.Dropped++
		l.fail(err)
	}
}

// shutdown closes c at the end of the run: a close frame, then the socket.
func (l *loop) shutdown(c *conn) {
	if c.state == stOpen && len(c.out) == 0 {
		l.wbuf = appendFrame(l.wbuf[:0], opClose, []byte{0x03, 0xe8}, &l.rng)
		_, _ = unix.Write(c.fd, l.wbuf)
	}
	l.closeConn(c, nil)
}
