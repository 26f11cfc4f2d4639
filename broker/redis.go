package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Errors of the Redis implementation, for errors.Is. Errors of Redis itself
// and of the network are returned wrapped, as are the context's.
var (
	// ErrUnavailable is returned when a subscription could not be confirmed
	// by Redis within the call's context or RedisConfig.OpTimeout; the
	// broker keeps it and subscribes when Redis is back.
	ErrUnavailable = errors.New("broker: redis unavailable")
	// ErrShardsMismatch is returned by NewRedis when the Redis database
	// was set up with another RedisConfig.Shards.
	ErrShardsMismatch = errors.New("broker: redis shards differ from the other nodes'")

	errBadReply = errors.New("unexpected reply from a script")
)

// Pub/sub flavours of RedisConfig.PubSub.
const (
	PubSubAuto    = "auto"    // sharded when the server knows SSUBSCRIBE (Redis 7+), else classic
	PubSubSharded = "sharded" // SSUBSCRIBE / SPUBLISH
	PubSubClassic = "classic" // SUBSCRIBE / PUBLISH
)

// RedisConfig configures Redis; NewRedis copies it. Zero fields take the
// defaults of SetDefaults. Every node of a cluster must use the same URL
// database, KeyPrefix, Shards and PubSub: they are part of the names the
// nodes meet under.
type RedisConfig struct {
	// URL names the server:
	//   redis://[user:password@]host:port[/db]   one server (rediss:// for TLS,
	//                                            unix:///path?db=N for a socket)
	//   redis+sentinel://[user:password@]host:port[/db]?master_name=NAME[&addr=host:port...]
	//                                            the master that Sentinel names,
	//                                            following failovers
	//   redis+cluster://[user:password@]host:port[?addr=host:port...]
	//                                            Redis Cluster (database 0)
	// Other query parameters are go-redis's own (ParseURL, ParseFailoverURL,
	// ParseClusterURL); the timeouts and pool sizes below override theirs.
	URL string
	// KeyPrefix starts every key and pub/sub channel name, so that several
	// applications can share one Redis. It must not contain '{' or '}'.
	KeyPrefix string
	// Shards partitions channels by a hash of their name. Each shard is one
	// pub/sub connection of every node, and its keys and pub/sub channels
	// share one Redis Cluster hash slot (a hash tag), so that a publish is
	// one script on one node. NewRedis refuses a Redis whose nodes use
	// another value (ErrShardsMismatch).
	Shards int
	// PubSub is PubSubAuto, PubSubSharded or PubSubClassic.
	PubSub string
	// PoolSize caps the command connections (0: go-redis's default, 10 per
	// CPU); MinIdleConns keeps that many open.
	PoolSize     int
	MinIdleConns int
	// DialTimeout, ReadTimeout, WriteTimeout and PoolTimeout bound each
	// network step; OpTimeout bounds a whole call (it shortens the
	// caller's context, never lengthens it). No call waits longer than
	// OpTimeout, even while Redis is down or the network stalls.
	DialTimeout  time.Duration
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	PoolTimeout  time.Duration
	OpTimeout    time.Duration
	// EmptyStreamTTL keeps the epoch of an empty stream (made by History
	// before any publish) this long after its last History call: the TTL
	// of its key, which bounds what clients naming fresh channels cost.
	EmptyStreamTTL time.Duration
	// PresenceTTL is how long a presence entry lives without a refresh.
	// The broker refreshes the entries it added every PresenceRefresh
	// itself, so a crashed node's clients leave within PresenceTTL.
	PresenceTTL     time.Duration
	PresenceRefresh time.Duration
	// CanaryInterval is how often the node publishes a canary to itself
	// through each shard; a shard whose canary has not come back for
	// CanaryTimeout makes Ready false and is resubscribed.
	CanaryInterval time.Duration
	CanaryTimeout  time.Duration
	// ReconnectMin and ReconnectMax bound the backoff between attempts to
	// reconnect a pub/sub connection; it doubles from Min to Max.
	ReconnectMin time.Duration
	ReconnectMax time.Duration
	// NodeID names this node's canary channels (default: random).
	NodeID string
}

// SetDefaults fills the zero fields of c.
func (c *RedisConfig) SetDefaults() {
	if c.URL == "" {
		c.URL = "redis://127.0.0.1:6379/0"
	}
	if c.KeyPrefix == "" {
		c.KeyPrefix = "wsedge"
	}
	if c.Shards == 0 {
		c.Shards = 16
	}
	if c.PubSub == "" {
		c.PubSub = PubSubAuto
	}
	setDur := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	setDur(&c.DialTimeout, time.Second)
	setDur(&c.ReadTimeout, time.Second)
	setDur(&c.WriteTimeout, time.Second)
	setDur(&c.PoolTimeout, time.Second)
	setDur(&c.OpTimeout, 2*time.Second)
	setDur(&c.EmptyStreamTTL, 10*time.Minute)
	setDur(&c.PresenceTTL, time.Minute)
	setDur(&c.PresenceRefresh, c.PresenceTTL/3)
	setDur(&c.CanaryInterval, time.Second)
	setDur(&c.CanaryTimeout, 3*c.CanaryInterval)
	setDur(&c.ReconnectMin, 50*time.Millisecond)
	setDur(&c.ReconnectMax, 2*time.Second)
	if c.NodeID == "" {
		c.NodeID = newEpoch()
	}
}

// Validate names the first bad field.
func (c *RedisConfig) Validate() error {
	bad := func(field string, v any, want string) error {
		return fmt.Errorf("broker: RedisConfig.%s = %v, want %s", field, v, want)
	}
	switch {
	case strings.ContainsAny(c.KeyPrefix, "{}"):
		return bad("KeyPrefix", c.KeyPrefix, "no '{' or '}'")
	case c.Shards <= 0 || c.Shards > 1024:
		return bad("Shards", c.Shards, "1..1024")
	case c.PubSub != PubSubAuto && c.PubSub != PubSubSharded && c.PubSub != PubSubClassic:
		return bad("PubSub", c.PubSub, "auto, sharded or classic")
	case c.PoolSize < 0:
		return bad("PoolSize", c.PoolSize, ">= 0")
	case c.MinIdleConns < 0:
		return bad("MinIdleConns", c.MinIdleConns, ">= 0")
	case c.DialTimeout < 0, c.ReadTimeout < 0, c.WriteTimeout < 0, c.PoolTimeout < 0:
		return bad("DialTimeout/ReadTimeout/WriteTimeout/PoolTimeout", "a negative value", "> 0")
	case c.OpTimeout <= 0:
		return bad("OpTimeout", c.OpTimeout, "> 0")
	case c.EmptyStreamTTL < time.Millisecond:
		return bad("EmptyStreamTTL", c.EmptyStreamTTL, ">= 1ms")
	case c.PresenceTTL < time.Millisecond:
		return bad("PresenceTTL", c.PresenceTTL, ">= 1ms")
	case c.PresenceRefresh <= 0 || c.PresenceRefresh >= c.PresenceTTL:
		return bad("PresenceRefresh", c.PresenceRefresh, "> 0 and < PresenceTTL")
	case c.CanaryInterval <= 0:
		return bad("CanaryInterval", c.CanaryInterval, "> 0")
	case c.CanaryTimeout <= c.CanaryInterval:
		return bad("CanaryTimeout", c.CanaryTimeout, "> CanaryInterval")
	case c.ReconnectMin <= 0 || c.ReconnectMax < c.ReconnectMin:
		return bad("ReconnectMin/ReconnectMax", [2]time.Duration{c.ReconnectMin, c.ReconnectMax}, "0 < Min <= Max")
	}
	_, err := c.parseURL()
	return err
}

// parseURL parses c.URL into the constructor of its go-redis client, which
// does not connect until used.
func (c *RedisConfig) parseURL() (func() redis.UniversalClient, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil, fmt.Errorf("broker: RedisConfig.URL: %w", err)
	}
	scheme, mode, _ := strings.Cut(u.Scheme, "+")
	plain := scheme + strings.TrimPrefix(c.URL, u.Scheme) // the URL without "+mode"
	// Retries are off: a publish whose reply was lost may have been
	// applied, and a retry would publish it twice under another offset.
	switch mode {
	case "":
		o, err := redis.ParseURL(c.URL)
		if err != nil {
			return nil, fmt.Errorf("broker: RedisConfig.URL: %w", err)
		}
		c.apply(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolTimeout, &o.PoolSize, &o.MinIdleConns, &o.MaxRetries, &o.DialerRetries, &o.ContextTimeoutEnabled)
		o.DisableIdentity = true
		return func() redis.UniversalClient { return redis.NewClient(o) }, nil
	case "sentinel":
		o, err := redis.ParseFailoverURL(plain)
		if err != nil {
			return nil, fmt.Errorf("broker: RedisConfig.URL: %w", err)
		}
		if o.MasterName == "" {
			return nil, fmt.Errorf("broker: RedisConfig.URL %q: want ?master_name=NAME", c.URL)
		}
		c.apply(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolTimeout, &o.PoolSize, &o.MinIdleConns, &o.MaxRetries, &o.DialerRetries, &o.ContextTimeoutEnabled)
		o.DisableIdentity = true
		return func() redis.UniversalClient { return redis.NewFailoverClient(o) }, nil
	case "cluster":
		if db := strings.Trim(u.Path, "/"); db != "" && db != "0" {
			return nil, fmt.Errorf("broker: RedisConfig.URL %q: Redis Cluster has only database 0", c.URL)
		}
		o, err := redis.ParseClusterURL(plain)
		if err != nil {
			return nil, fmt.Errorf("broker: RedisConfig.URL: %w", err)
		}
		c.apply(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolTimeout, &o.PoolSize, &o.MinIdleConns, &o.MaxRetries, &o.DialerRetries, &o.ContextTimeoutEnabled)
		o.DisableIdentity = true
		return func() redis.UniversalClient { return redis.NewClusterClient(o) }, nil
	}
	return nil, fmt.Errorf("broker: RedisConfig.URL scheme %q, want redis, rediss, unix, redis+sentinel or redis+cluster", u.Scheme)
}

// apply sets the go-redis options that RedisConfig owns, whichever client
// type they belong to.
func (c *RedisConfig) apply(dial, read, write, pool *time.Duration, poolSize, minIdle, retries, dialRetries *int, ctxTimeout *bool) {
	*dial, *read, *write, *pool = c.DialTimeout, c.ReadTimeout, c.WriteTimeout, c.PoolTimeout
	if c.PoolSize > 0 {
		*poolSize = c.PoolSize
	}
	*minIdle = c.MinIdleConns
	*retries = -1
	*dialRetries = 1 // the pub/sub reconnect loop has its own backoff
	*ctxTimeout = true
}

// Redis is the cluster Broker and PresenceManager: history streams,
// cross-node delivery and presence in one Redis (standalone, behind
// Sentinel, or a Cluster), shared by every node.
//
// Delivery: each node subscribes a channel once, however many of its
// clients do, on the pub/sub connection of the channel's shard
// (RedisConfig.Shards connections per node, whatever the number of
// channels). Subscribe and Unsubscribe queue the change for the shard's
// writer goroutine, which sends the queued changes as one SSUBSCRIBE (or
// SUBSCRIBE) of many channels; Subscribe returns once Redis confirmed it,
// so a publication numbered after a later History position is delivered.
// The handler runs on the shard's reader goroutine, per channel in offset
// order, each publication once: after a reconnect the reader fetches what
// a channel missed from its history before delivering anything newer (when
// the stream has a new epoch since, the new epoch from its start), and
// drops what it already delivered. Publications lost for good (trimmed or
// expired before the reader could fetch them, or published without
// history) cannot be delivered; Stats counts them.
//
// Faults: every call returns an error within OpTimeout when Redis is down
// or the network stalls. A reader whose connection fails reconnects with
// backoff and resubscribes every channel of its shard. Ready reports
// whether each shard's canary (see RedisConfig.CanaryInterval) comes back:
// it catches a pub/sub connection that went silent while commands still
// work, and the broker then resubscribes the shard on a new connection.
//
// Redis is safe for concurrent use. It runs 2×Shards+2 goroutines (a
// reader and a writer per shard, the canary monitor, the presence
// refresher) besides go-redis's, all stopped by Close.
//
// Lock order: a shard's mu and pmu are never held together; mu is held
// while calling the handler and never across network I/O.
type Redis struct {
	cfg     RedisConfig
	c       redis.UniversalClient
	sharded bool
	handler atomic.Pointer[Handler]
	shards  []*redisShard

	ctx       context.Context // canceled by Close
	cancel    context.CancelFunc
	closed    atomic.Bool
	closeOnce sync.Once
	wg        sync.WaitGroup

	stats redisCounters
}

var (
	_ Broker          = (*Redis)(nil)
	_ PresenceManager = (*Redis)(nil)
)

// RedisStats, a plain value, is a snapshot of the broker's health for
// metrics and readiness.
type RedisStats struct {
	// Ready is Ready().
	Ready bool
	// ShardsUp counts the shards whose canary came back within
	// CanaryTimeout.
	ShardsUp int
	// Reconnects counts pub/sub connections rebuilt after an error;
	// ForcedResubscribes those rebuilt because the canary stopped.
	Reconnects         uint64
	ForcedResubscribes uint64
	// Refetched counts publications delivered from history after a
	// reconnect or a gap; Lost those no node can deliver any more.
	Refetched uint64
	Lost      uint64
	// PresenceRefreshErrors counts failed presence refresh rounds.
	PresenceRefreshErrors uint64
}

type redisCounters struct {
	reconnects, forced, refetched, lost, presenceErrors atomic.Uint64
}

// NewRedis connects to cfg.URL (within ctx), checks that the database's
// shard count agrees, detects sharded pub/sub for PubSubAuto, and starts
// the broker's goroutines. It fails when Redis cannot be reached; once it
// has returned, the broker survives Redis restarts on its own.
func NewRedis(ctx context.Context, cfg RedisConfig) (*Redis, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	newClient, err := cfg.parseURL()
	if err != nil {
		return nil, err
	}
	c := newClient()
	r := &Redis{cfg: cfg, c: c}
	if err := r.setup(ctx); err != nil {
		c.Close()
		return nil, err
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.shards = make([]*redisShard, cfg.Shards)
	for i := range r.shards {
		r.shards[i] = newRedisShard(r, i)
	}
	for _, sh := range r.shards {
		r.wg.Add(2)
		go sh.read()
		go sh.write()
	}
	r.wg.Add(2)
	go r.monitor()
	go r.refreshPresence()
	return r, nil
}

func (r *Redis) setup(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.OpTimeout)
	defer cancel()
	key := r.cfg.KeyPrefix + ":shards"
	n := strconv.Itoa(r.cfg.Shards)
	if err := r.c.SetNX(ctx, key, n, 0).Err(); err != nil {
		return fmt.Errorf("broker: redis %s: %w", r.cfg.URL, err)
	}
	if got, err := r.c.Get(ctx, key).Result(); err != nil {
		return fmt.Errorf("broker: redis %s: %w", r.cfg.URL, err)
	} else if got != n {
		return fmt.Errorf("%w: %s is %s, RedisConfig.Shards %s", ErrShardsMismatch, key, got, n)
	}
	switch r.cfg.PubSub {
	case PubSubSharded:
		r.sharded = true
	case PubSubAuto:
		info, err := r.c.Do(ctx, "command", "info", "ssubscribe").Slice()
		if err != nil {
			return fmt.Errorf("broker: redis %s: %w", r.cfg.URL, err)
		}
		r.sharded = len(info) == 1 && info[0] != nil
	}
	return nil
}

// fnv32 hashes a channel name to its shard, the same on every node.
func fnv32(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

func (r *Redis) shard(channel string) *redisShard {
	return r.shards[fnv32(channel)%uint32(len(r.shards))]
}

func (r *Redis) check(ctx context.Context) error {
	if r.closed.Load() {
		return ErrClosed
	}
	return ctx.Err()
}

// opCtx bounds a call by OpTimeout.
func (r *Redis) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.cfg.OpTimeout)
}

func redisErr(op, channel string, err error) error {
	return fmt.Errorf("broker: redis %s %q: %w", op, channel, err)
}

// SetHandler implements Broker.
func (r *Redis) SetHandler(h Handler) {
	r.handler.Store(&h)
}

// Subscribe implements Broker. It returns once Redis confirmed the
// subscription, or ErrUnavailable (wrapped with the context's error) when
// that did not happen within ctx and OpTimeout; the subscription then
// stays wanted and is made when Redis answers, unless Unsubscribe comes
// first.
func (r *Redis) Subscribe(ctx context.Context, channel string) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	if r.handler.Load() == nil {
		return ErrNoHandler
	}
	ready := r.shard(channel).subscribe(channel)
	if ready == nil {
		return nil
	}
	ctx, cancel := r.opCtx(ctx)
	defer cancel()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: subscribe %q: %w", ErrUnavailable, channel, ctx.Err())
	case <-r.ctx.Done():
		return ErrClosed
	}
}

// Unsubscribe implements Broker. Delivery stops when it returns; Redis is
// told asynchronously, so it does not fail while Redis is down.
func (r *Redis) Unsubscribe(ctx context.Context, channel string) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	r.shard(channel).unsubscribe(channel)
	return nil
}

// Publish implements Broker: one script call that assigns the offset,
// appends to the history, trims it, sets its expiry and publishes, so
// delivery order is offset order. A publish without history is one
// (S)PUBLISH. An error means the publication may or may not have been
// made (the reply can be lost after Redis applied it).
func (r *Redis) Publish(ctx context.Context, channel string, data []byte, opts PublishOptions) (StreamPosition, error) {
	if err := r.check(ctx); err != nil {
		return StreamPosition{}, err
	}
	if opts.HistorySize < 0 || opts.HistoryTTL < 0 {
		return StreamPosition{}, ErrBadOptions
	}
	ctx, cancel := r.opCtx(ctx)
	defer cancel()
	sh := r.shard(channel)
	if opts.HistorySize == 0 {
		msg := make([]byte, 0, len(data)+3)
		msg = append(append(msg, "0::"...), data...)
		if err := r.once(ctx, redis.NewCmd(ctx, r.publishCmd(), sh.pubChannel(channel), msg)).Err(); err != nil {
			return StreamPosition{}, redisErr("publish", channel, err)
		}
		return StreamPosition{}, nil
	}
	ttl := int64(0)
	if opts.HistoryTTL > 0 {
		ttl = max(opts.HistoryTTL.Milliseconds(), 1)
	}
	keys := sh.streamKeys(channel)
	args := []any{"evalsha", publishScript.Hash(), len(keys), keys[0], keys[1], data, opts.HistorySize, ttl, newEpoch(), sh.pubChannel(channel), r.publishCmd()}
	cmd := r.once(ctx, redis.NewCmd(ctx, args...))
	if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
		args[0], args[1] = "eval", publishLua
		cmd = r.once(ctx, redis.NewCmd(ctx, args...))
	}
	res, err := cmd.Slice()
	if err != nil {
		return StreamPosition{}, redisErr("publish", channel, err)
	}
	top, epoch, ok := scriptPosition(res)
	if !ok {
		return StreamPosition{}, redisErr("publish", channel, errBadReply)
	}
	return StreamPosition{Offset: top, Epoch: epoch}, nil
}

// noRetry marks a command that go-redis must not send again after a
// network error: its cluster client retries such a command on its own
// (MaxRetries does not govern that), and a publish whose reply was lost
// may have been applied. Redirections (MOVED, ASK) and READONLY, which
// say that nothing was applied, are still followed.
type noRetry struct{ *redis.Cmd }

func (noRetry) NoRetry() bool { return true }

// once runs cmd without retries after network errors; see noRetry.
func (r *Redis) once(ctx context.Context, cmd *redis.Cmd) *redis.Cmd {
	_ = r.c.Process(ctx, noRetry{cmd})
	return cmd
}

func (r *Redis) publishCmd() string {
	if r.sharded {
		return "spublish"
	}
	return "publish"
}

// scriptPosition reads the {offset, epoch, ...} a script returned.
func scriptPosition(res []any) (uint64, string, bool) {
	if len(res) < 2 {
		return 0, "", false
	}
	top, ok1 := res[0].(int64)
	epoch, ok2 := res[1].(string)
	return uint64(top), epoch, ok1 && ok2 && top >= 0
}

// History implements Broker. The empty stream it makes for a channel
// without one lives EmptyStreamTTL after the last History call on it; a
// client that recovers from its position after that gets Recovered false.
func (r *Redis) History(ctx context.Context, channel string, req HistoryRequest) (HistoryResult, error) {
	if err := r.check(ctx); err != nil {
		return HistoryResult{}, err
	}
	ctx, cancel := r.opCtx(ctx)
	defer cancel()
	res, err := r.history(ctx, r.c, r.shard(channel), channel, req).Slice()
	if err != nil {
		return HistoryResult{}, redisErr("history", channel, err)
	}
	out, ok := parseHistory(res, req)
	if !ok {
		return HistoryResult{}, redisErr("history", channel, errBadReply)
	}
	return out, nil
}

// history runs the history script on c, a client or a pipeline.
func (r *Redis) history(ctx context.Context, c redis.Scripter, sh *redisShard, channel string, req HistoryRequest) *redis.Cmd {
	since, sinceOff, sinceEpoch := "0", "0", ""
	if req.Since != nil {
		since, sinceOff, sinceEpoch = "1", strconv.FormatUint(req.Since.Offset, 10), req.Since.Epoch
	}
	limit := req.Limit
	if limit < 0 {
		limit = -1
	}
	return historyScript.Run(ctx, c, sh.streamKeys(channel), newEpoch(), r.cfg.EmptyStreamTTL.Milliseconds(), since, sinceOff, sinceEpoch, limit)
}

// parseHistory turns the history script's reply into the result of req.
func parseHistory(res []any, req HistoryRequest) (HistoryResult, bool) {
	top, epoch, ok := scriptPosition(res)
	if !ok || len(res) != 4 {
		return HistoryResult{}, false
	}
	from, ok1 := res[2].(int64)
	entries, ok2 := res[3].([]any)
	if !ok1 || !ok2 || from < 0 {
		return HistoryResult{}, false
	}
	out := HistoryResult{Position: StreamPosition{Offset: top, Epoch: epoch}}
	if len(entries) > 0 {
		out.Publications = make([]Publication, len(entries))
		for i, e := range entries {
			s, ok := e.(string)
			j := strings.IndexByte(s, ':')
			if !ok || j < 0 {
				return HistoryResult{}, false
			}
			out.Publications[i] = Publication{Offset: uint64(from) + uint64(i), Epoch: epoch, Data: []byte(s[j+1:])}
		}
	}
	if s := req.Since; s != nil && s.Epoch == epoch && s.Offset <= top {
		out.Recovered = uint64(len(entries)) == top-s.Offset
	}
	return out, true
}

// RemoveHistory implements Broker.
func (r *Redis) RemoveHistory(ctx context.Context, channel string) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	ctx, cancel := r.opCtx(ctx)
	defer cancel()
	if err := r.c.Del(ctx, r.shard(channel).streamKeys(channel)...).Err(); err != nil {
		return redisErr("remove history", channel, err)
	}
	return nil
}

// Ready reports whether every shard's canary came back through this node's
// own subscription within CanaryTimeout: publishing and delivery through
// Redis both work. It is false from NewRedis until the first canaries
// return (about one CanaryInterval), from the moment a pub/sub connection
// fails until it is back, and after Close. An engine answers /readyz with
// it. Any goroutine may call it; it does not allocate.
func (r *Redis) Ready() bool {
	return !r.closed.Load() && r.shardsUp() == len(r.shards)
}

func (r *Redis) shardsUp() int {
	limit := time.Now().Add(-r.cfg.CanaryTimeout).UnixNano()
	n := 0
	for _, sh := range r.shards {
		if sh.canarySeen.Load() >= limit {
			n++
		}
	}
	return n
}

// Stats returns a snapshot of the broker's health counters.
func (r *Redis) Stats() RedisStats {
	return RedisStats{
		Ready:                 r.Ready(),
		ShardsUp:              r.shardsUp(),
		Reconnects:            r.stats.reconnects.Load(),
		ForcedResubscribes:    r.stats.forced.Load(),
		Refetched:             r.stats.refetched.Load(),
		Lost:                  r.stats.lost.Load(),
		PresenceRefreshErrors: r.stats.presenceErrors.Load(),
	}
}

// Close stops the goroutines, closes the connections and makes later
// calls return ErrClosed. Presence entries this node added are left to
// expire within PresenceTTL. It is idempotent and always returns nil.
func (r *Redis) Close() error {
	r.closeOnce.Do(func() {
		r.closed.Store(true)
		r.cancel()
		for _, sh := range r.shards {
			sh.close()
		}
		r.wg.Wait()
		r.c.Close()
	})
	return nil
}

// monitor publishes each shard's canary every CanaryInterval and breaks
// the pub/sub connection of a shard whose reader is serving but whose
// canary stopped coming back: the reader then resubscribes the shard on a
// new connection.
func (r *Redis) monitor() {
	defer r.wg.Done()
	t := time.NewTicker(r.cfg.CanaryInterval)
	defer t.Stop()
	for {
		// A canary that could not be published says nothing about the
		// subscriptions: only one that was published and did not come
		// back breaks a connection.
		published := r.publishCanaries()
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		stale := time.Now().Add(-r.cfg.CanaryTimeout).UnixNano()
		for _, sh := range r.shards {
			if published && sh.serving.Load() && sh.canarySeen.Load() < stale && sh.servingSince.Load() < stale {
				r.stats.forced.Add(1)
				sh.breakConn(sh.currentGen())
			}
		}
	}
}

// publishCanaries publishes every shard's canary through the command
// pool, the one Publish uses (go-redis's pipeline pool recovers from an
// outage on its own schedule): a canary that comes back proves both
// publishing and delivery. It is a script that also writes a key of the
// shard's slot, as Publish does: a Redis Cluster master that refuses
// writes (CLUSTERDOWN while the cluster is failed, or for a while after it
// restarted) still relays SPUBLISH, and a replica that Sentinel has not
// yet demoted in every client's view answers READONLY. It reports whether
// all were published.
func (r *Redis) publishCanaries() bool {
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.CanaryInterval)
	defer cancel()
	ok := true
	ttl := strconv.FormatInt(max(r.cfg.CanaryTimeout.Milliseconds(), 1), 10)
	for _, sh := range r.shards {
		err := canaryScript.Run(ctx, r.c, []string{sh.canaryKey}, r.cfg.NodeID, ttl, sh.canary, r.publishCmd()).Err()
		ok = ok && err == nil
	}
	return ok
}

// sleep waits d or until Close; it reports whether the broker is open.
func (r *Redis) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-r.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// SetRedisLogger sends go-redis's own messages (failed dials while Redis
// is down, and the like) to log at warning level instead of its default
// logger on stderr. go-redis keeps one logger per process.
func SetRedisLogger(log *slog.Logger) {
	redis.SetLogger(redisLogger{log})
}

type redisLogger struct{ l *slog.Logger }

func (r redisLogger) Printf(_ context.Context, format string, v ...any) {
	r.l.Warn(fmt.Sprintf(format, v...), "src", "go-redis")
}
