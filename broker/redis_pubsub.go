package broker

import (
	"context"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// maxSubscribeBatch caps the channels of one SSUBSCRIBE: big enough that
// thousands of changes take a few round trips, small enough that one
// command does not hold Redis for long.
const maxSubscribeBatch = 1024

// maxCatchUpBatch caps the history fetches of one pipeline after a
// reconnect.
const maxCatchUpBatch = 256

// redisShard is one partition of the channels: its keys and pub/sub
// channels share a hash tag, and it has one pub/sub connection per node,
// read by its reader goroutine and written by its writer goroutine.
type redisShard struct {
	r         *Redis
	base      string // "{prefix:N}", the hash tag every name of the shard starts with
	canary    string // this node's canary channel through this shard
	canaryKey string // the key its canary script writes, in the shard's slot

	// canarySeen is when the canary last came back (unix ns; 0 after the
	// connection failed). serving is true while the reader reads a
	// connection it subscribed, since servingSince.
	canarySeen   atomic.Int64
	serving      atomic.Bool
	servingSince atomic.Int64

	kick chan struct{} // wakes the writer; capacity 1

	mu       sync.Mutex
	closed   bool
	ps       *redis.PubSub
	gen      uint64               // counts the connections (ps) so far
	subs     map[string]*redisSub // by pub/sub channel name
	queue    []*redisSub          // subs whose want may differ from sent, for the writer
	inflight int                  // commands sent on ps and not yet confirmed
	catchUp  []*redisSub          // confirmed after a reconnect, to fetch what they missed

	pmu      sync.Mutex
	presence map[string]map[string]ClientInfo // this node's entries, refreshed
}

// redisSub is the node's subscription of one channel, guarded by its
// shard's mu.
type redisSub struct {
	channel string // the broker's name
	rname   string // the pub/sub channel's name
	// want is what the broker's callers asked for; sent is what the
	// commands sent on the current connection amount to; inflight counts
	// those not yet confirmed.
	want, sent bool
	inflight   int
	queued     bool
	confirmed  bool          // want, sent and confirmed on the current connection
	ready      chan struct{} // closed when confirmed; nil when nobody waits
	// epoch and last are the position of the last delivered publication;
	// "" when none since the subscription.
	epoch      string
	last       uint64
	needsCatch bool
}

func newRedisShard(r *Redis, i int) *redisShard {
	base := "{" + r.cfg.KeyPrefix + ":" + strconv.Itoa(i) + "}"
	return &redisShard{
		r:         r,
		base:      base,
		canary:    base + ":canary:" + r.cfg.NodeID,
		canaryKey: base + ":k:" + r.cfg.NodeID,
		kick:      make(chan struct{}, 1),
		subs:      make(map[string]*redisSub),
		presence:  make(map[string]map[string]ClientInfo),
	}
}

func (sh *redisShard) pubChannel(channel string) string { return sh.base + ":c:" + channel }

func (sh *redisShard) streamKeys(channel string) []string {
	return []string{sh.base + ":m:" + channel, sh.base + ":h:" + channel}
}

func (sh *redisShard) presenceKeys(channel string) []string {
	return []string{sh.base + ":ph:" + channel, sh.base + ":pz:" + channel, sh.base + ":pu:" + channel}
}

// subscribe marks the channel wanted and returns a channel closed when
// Redis confirmed it, or nil when it already had.
func (sh *redisShard) subscribe(channel string) <-chan struct{} {
	rname := sh.pubChannel(channel)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s := sh.subs[rname]
	if s == nil {
		s = &redisSub{channel: channel, rname: rname}
		sh.subs[rname] = s
	}
	if s.want && s.confirmed {
		return nil
	}
	s.want = true
	if s.sent && s.inflight == 0 && sh.serving.Load() {
		// Unsubscribed and subscribed again before the writer told Redis:
		// Redis never stopped, so the subscription stands as confirmed.
		s.confirmed = true
		return nil
	}
	if s.ready == nil {
		s.ready = make(chan struct{})
	}
	sh.enqueueLocked(s)
	return s.ready
}

func (sh *redisShard) unsubscribe(channel string) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s := sh.subs[sh.pubChannel(channel)]
	if s == nil || !s.want {
		return
	}
	// Forgetting the position: publications between now and a later
	// Subscribe are not this node's to deliver.
	s.want, s.confirmed, s.epoch, s.last, s.needsCatch = false, false, "", 0, false
	sh.enqueueLocked(s)
}

func (sh *redisShard) enqueueLocked(s *redisSub) {
	if !s.queued {
		s.queued = true
		sh.queue = append(sh.queue, s)
	}
	select {
	case sh.kick <- struct{}{}:
	default:
	}
}

// dropIfIdleLocked forgets s when nothing refers to it any more.
func (sh *redisShard) dropIfIdleLocked(s *redisSub) {
	if !s.want && !s.sent && s.inflight == 0 && !s.queued && sh.subs[s.rname] == s {
		delete(sh.subs, s.rname)
	}
}

func (sh *redisShard) currentGen() uint64 {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.gen
}

// breakConn closes the shard's connection if it is still connection gen;
// the reader then makes a new one and resubscribes.
func (sh *redisShard) breakConn(gen uint64) {
	sh.mu.Lock()
	ps := sh.ps
	if sh.gen != gen || ps == nil {
		ps = nil
	}
	sh.mu.Unlock()
	if ps != nil {
		ps.Close()
	}
}

func (sh *redisShard) close() {
	sh.mu.Lock()
	sh.closed = true
	ps := sh.ps
	sh.ps = nil
	sh.mu.Unlock()
	if ps != nil {
		ps.Close()
	}
}

// reset replaces the connection with a new, unconnected one and queues
// every wanted channel to be subscribed on it; it returns nil after Close.
func (sh *redisShard) reset() (*redis.PubSub, uint64) {
	sh.serving.Store(false)
	sh.canarySeen.Store(0)
	var ps *redis.PubSub
	if sh.r.sharded {
		ps = sh.r.c.SSubscribe(sh.r.ctx)
	} else {
		ps = sh.r.c.Subscribe(sh.r.ctx)
	}
	sh.mu.Lock()
	if sh.closed {
		sh.mu.Unlock()
		ps.Close()
		return nil, 0
	}
	old := sh.ps
	sh.ps = ps
	sh.gen++
	gen := sh.gen
	sh.inflight = 0
	sh.queue = sh.queue[:0]
	sh.catchUp = sh.catchUp[:0]
	for name, s := range sh.subs {
		s.sent, s.inflight, s.confirmed, s.queued = false, 0, false, false
		if !s.want {
			delete(sh.subs, name)
			continue
		}
		s.needsCatch = s.epoch != ""
		s.queued = true
		sh.queue = append(sh.queue, s)
	}
	sh.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return ps, gen
}

// read is the shard's reader goroutine: it (re)connects with backoff,
// subscribes the canary, and reads the connection until it fails.
func (sh *redisShard) read() {
	defer sh.r.wg.Done()
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if !sh.r.sleep(sh.backoff(attempt)) {
				return
			}
			sh.r.stats.reconnects.Add(1)
		}
		ps, gen := sh.reset()
		if ps == nil {
			return
		}
		if sh.serve(ps, gen) {
			attempt = 0
		}
	}
}

// backoff is the wait before reconnect attempt n (n >= 1): ReconnectMin
// doubling up to ReconnectMax, with jitter so that nodes do not reconnect
// in step.
func (sh *redisShard) backoff(n int) time.Duration {
	d := sh.r.cfg.ReconnectMin << min(n-1, 20)
	if d > sh.r.cfg.ReconnectMax || d <= 0 {
		d = sh.r.cfg.ReconnectMax
	}
	return d/2 + rand.N(d/2+1)
}

// serve subscribes the canary on ps, which routes its connection to the
// shard's hash slot, wakes the writer for the queued channels, and reads
// until the connection fails. It reports whether Redis answered at all.
func (sh *redisShard) serve(ps *redis.PubSub, gen uint64) bool {
	ctx, cancel := sh.r.opCtx(sh.r.ctx)
	err := sh.sendSubscribe(ctx, ps, true, []string{sh.canary})
	cancel()
	if err != nil {
		return false
	}
	select {
	case sh.kick <- struct{}{}:
	default:
	}
	// The canary's confirmation must come within OpTimeout: a connection
	// that is silent from the start is not yet watched by the monitor.
	// Later reads wait as long as it takes, the canary watching them.
	answered, timeout := false, sh.r.cfg.OpTimeout
	for {
		msg, err := ps.ReceiveTimeout(sh.r.ctx, timeout)
		if err != nil {
			sh.serving.Store(false)
			sh.canarySeen.Store(0)
			return answered
		}
		if !answered {
			answered, timeout = true, 0
			sh.servingSince.Store(time.Now().UnixNano())
			sh.serving.Store(true)
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			sh.confirm(m)
		case *redis.Message:
			if m.Channel == sh.canary {
				sh.canarySeen.Store(time.Now().UnixNano())
				continue
			}
			sh.flushCatchUp(gen)
			sh.deliver(m)
		}
	}
}

func (sh *redisShard) sendSubscribe(ctx context.Context, ps *redis.PubSub, on bool, names []string) error {
	switch {
	case on && sh.r.sharded:
		return ps.SSubscribe(ctx, names...)
	case on:
		return ps.Subscribe(ctx, names...)
	case sh.r.sharded:
		return ps.SUnsubscribe(ctx, names...)
	default:
		return ps.Unsubscribe(ctx, names...)
	}
}

// write is the shard's writer goroutine: it sends the queued changes in
// batches, so that thousands of channels subscribed at once cost a few
// commands.
func (sh *redisShard) write() {
	defer sh.r.wg.Done()
	for {
		select {
		case <-sh.r.ctx.Done():
			return
		case <-sh.kick:
		}
		for sh.writeBatch() {
		}
	}
}

// writeBatch sends one batch of queued changes; it reports whether more
// are queued. One batch at a time is in flight: the changes that arrive
// while Redis answers it make the next one, so that thousands of channels
// subscribed at once take a few commands, however fast the writer is.
// The batch's last confirmation, or a new connection, wakes the writer.
func (sh *redisShard) writeBatch() bool {
	var on, off []string
	sh.mu.Lock()
	ps, gen := sh.ps, sh.gen
	if ps == nil || sh.inflight > 0 {
		sh.mu.Unlock()
		return false
	}
	n := 0
	for n < len(sh.queue) && len(on)+len(off) < maxSubscribeBatch {
		s := sh.queue[n]
		n++
		s.queued = false
		if s.want == s.sent {
			sh.dropIfIdleLocked(s)
			continue
		}
		s.sent = s.want
		s.inflight++
		sh.inflight++
		if s.want {
			on = append(on, s.rname)
		} else {
			off = append(off, s.rname)
		}
	}
	rest := copy(sh.queue, sh.queue[n:])
	clear(sh.queue[rest:])
	sh.queue = sh.queue[:rest]
	sh.mu.Unlock()

	ctx, cancel := sh.r.opCtx(sh.r.ctx)
	defer cancel()
	var err error
	if len(on) > 0 {
		err = sh.sendSubscribe(ctx, ps, true, on)
	}
	if err == nil && len(off) > 0 {
		err = sh.sendSubscribe(ctx, ps, false, off)
	}
	if err != nil {
		// The reader requeues everything on the next connection.
		sh.breakConn(gen)
		return false
	}
	return rest > 0
}

// confirm accounts for Redis's answer to one channel of a (un)subscribe.
func (sh *redisShard) confirm(m *redis.Subscription) {
	sh.mu.Lock()
	s := sh.subs[m.Channel]
	if s == nil {
		sh.mu.Unlock()
		return
	}
	switch {
	case s.inflight > 0:
		s.inflight--
		sh.inflight--
	case strings.HasSuffix(m.Kind, "unsubscribe") && s.sent:
		// Unasked: Redis dropped the subscription (its hash slot moved).
		s.sent, s.confirmed = false, false
		sh.enqueueLocked(s)
	}
	if s.inflight == 0 {
		if s.want && s.sent && !s.confirmed {
			s.confirmed = true
			if s.ready != nil {
				close(s.ready)
				s.ready = nil
			}
			if s.needsCatch {
				sh.catchUp = append(sh.catchUp, s)
			}
		}
		sh.dropIfIdleLocked(s)
	}
	if sh.inflight == 0 && len(sh.queue) > 0 {
		select {
		case sh.kick <- struct{}{}:
		default:
		}
	}
	flush := len(sh.catchUp) >= maxCatchUpBatch || (len(sh.catchUp) > 0 && sh.inflight == 0)
	gen := sh.gen
	sh.mu.Unlock()
	if flush {
		sh.flushCatchUp(gen)
	}
}

// catchWant is one channel's history fetch after a reconnect or a gap.
type catchWant struct {
	s     *redisSub
	since StreamPosition
}

// flushCatchUp fetches, in one pipeline, what the channels resubscribed
// after a reconnect missed while the node was not subscribed, and delivers
// it before anything newer. A channel whose stream has a new epoch since
// (Redis lost it, or a failover started it again) is fetched again from
// the new epoch's start, in a second pipeline, so that what was published
// in the new epoch before the node resubscribed is delivered too. Runs on
// the reader.
func (sh *redisShard) flushCatchUp(gen uint64) {
	sh.mu.Lock()
	if len(sh.catchUp) == 0 {
		sh.mu.Unlock()
		return
	}
	wants := make([]catchWant, 0, len(sh.catchUp))
	for _, s := range sh.catchUp {
		if s.want && s.needsCatch && s.epoch != "" {
			s.needsCatch = false
			wants = append(wants, catchWant{s, StreamPosition{Offset: s.last, Epoch: s.epoch}})
		}
	}
	clear(sh.catchUp)
	sh.catchUp = sh.catchUp[:0]
	sh.mu.Unlock()

	ctx, cancel := sh.r.opCtx(sh.r.ctx)
	defer cancel()
	for round := 0; round < 2 && len(wants) > 0; round++ {
		results, oks := sh.fetchMany(ctx, wants)
		var again []catchWant
		sh.mu.Lock()
		for i, w := range wants {
			hr := results[i]
			switch {
			case !oks[i]:
				// Try again with the channel's next publication, which will
				// show the gap.
				if w.s.want && w.s.epoch == w.since.Epoch && w.s.last == w.since.Offset && sh.gen == gen {
					w.s.needsCatch = true
				}
			case hr.Position.Epoch != w.since.Epoch && round == 0:
				again = append(again, catchWant{w.s, StreamPosition{Epoch: hr.Position.Epoch}})
			default:
				sh.deliverFetchedLocked(w.s, w.since, hr)
			}
		}
		sh.mu.Unlock()
		wants = again
	}
}

// fetchMany runs the history fetches of wants in one pipeline; oks[i]
// says whether results[i] is valid.
func (sh *redisShard) fetchMany(ctx context.Context, wants []catchWant) (results []HistoryResult, oks []bool) {
	pipe := sh.r.c.Pipeline()
	cmds := make([]*redis.Cmd, len(wants))
	for i, w := range wants {
		cmds[i] = sh.r.history(ctx, pipe, sh, w.s.channel, HistoryRequest{Since: &w.since, Limit: NoLimit})
	}
	pipe.Exec(ctx) // errors are per command
	results, oks = make([]HistoryResult, len(wants)), make([]bool, len(wants))
	for i, w := range wants {
		res, err := cmds[i].Slice()
		if redis.HasErrorPrefix(err, "NOSCRIPT") {
			res, err = sh.r.history(ctx, sh.r.c, sh, w.s.channel, HistoryRequest{Since: &w.since, Limit: NoLimit}).Slice()
		}
		if err == nil {
			results[i], oks[i] = parseHistory(res, HistoryRequest{Since: &w.since, Limit: NoLimit})
		}
	}
	return results, oks
}

// deliverFetchedLocked hands the publications fetched since since that s
// has not delivered to the handler, and counts those lost for good. since
// is s's position, or the start {0, epoch} of a new epoch of the stream,
// which s then moves to.
func (sh *redisShard) deliverFetchedLocked(s *redisSub, since StreamPosition, hr HistoryResult) {
	if !s.want || s.epoch == "" {
		return
	}
	if hr.Position.Epoch != since.Epoch {
		// The stream was lost again; its next publication shows it.
		return
	}
	if s.epoch != since.Epoch {
		s.epoch, s.last = since.Epoch, since.Offset
	}
	h := sh.r.handler.Load()
	for _, p := range hr.Publications {
		if p.Offset <= s.last {
			continue
		}
		if p.Offset > s.last+1 {
			sh.r.stats.lost.Add(p.Offset - s.last - 1)
		}
		if h != nil {
			(*h)(s.channel, p)
		}
		sh.r.stats.refetched.Add(1)
		s.last = p.Offset
	}
}

// parsePayload splits "<offset>:<epoch>:<data>", the pub/sub message of a
// publication.
func parsePayload(p string) (offset uint64, epoch, data string, ok bool) {
	i := strings.IndexByte(p, ':')
	if i < 0 {
		return 0, "", "", false
	}
	j := strings.IndexByte(p[i+1:], ':')
	if j < 0 {
		return 0, "", "", false
	}
	off, err := strconv.ParseUint(p[:i], 10, 64)
	return off, p[i+1 : i+1+j], p[i+2+j:], err == nil
}

// deliver hands a publication from pub/sub to the handler, in offset order
// without gaps: one the channel already delivered is dropped, and before
// one that follows a gap the reader fetches the gap from history.
func (sh *redisShard) deliver(m *redis.Message) {
	off, epoch, data, ok := parsePayload(m.Payload)
	if !ok {
		return
	}
	pub := Publication{Offset: off, Epoch: epoch, Data: []byte(data)}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s := sh.subs[m.Channel]
	if s == nil || !s.want {
		return
	}
	h := sh.r.handler.Load()
	if off == 0 {
		if h != nil {
			(*h)(s.channel, pub)
		}
		return
	}
	if s.epoch != "" {
		// The position this publication follows: the last delivered one,
		// or the start of a new epoch.
		since := StreamPosition{Epoch: epoch}
		if s.epoch == epoch {
			if off <= s.last {
				return
			}
			since.Offset = s.last
		}
		if off > since.Offset+1 {
			gen := sh.gen
			sh.mu.Unlock()
			hr, err := sh.fetch(s.channel, since)
			sh.mu.Lock()
			if s = sh.subs[m.Channel]; s == nil || !s.want || sh.gen != gen {
				return
			}
			if err == nil {
				sh.deliverFetchedLocked(s, since, hr)
			}
			if s.epoch == epoch && off <= s.last {
				return
			}
			if s.epoch != "" {
				base := uint64(0) // not fetched: the new epoch's start is lost
				if s.epoch == epoch {
					base = s.last
				}
				if off > base+1 {
					sh.r.stats.lost.Add(off - base - 1)
				}
			}
		}
	}
	if h != nil {
		(*h)(s.channel, pub)
	}
	s.epoch, s.last = epoch, off
}

func (sh *redisShard) fetch(channel string, since StreamPosition) (HistoryResult, error) {
	ctx, cancel := sh.r.opCtx(sh.r.ctx)
	defer cancel()
	req := HistoryRequest{Since: &since, Limit: NoLimit}
	res, err := sh.r.history(ctx, sh.r.c, sh, channel, req).Slice()
	if err != nil {
		return HistoryResult{}, err
	}
	hr, ok := parseHistory(res, req)
	if !ok {
		return HistoryResult{}, redisErr("history", channel, errBadReply)
	}
	return hr, nil
}
