package broker

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// maxRefreshBatch caps the channels of one presence refresh pipeline.
const maxRefreshBatch = 256

// encodePresence stores a client as "<len(user)>:<user><info>": user ids
// and infos may hold any byte.
func encodePresence(info ClientInfo) []byte {
	b := make([]byte, 0, len(info.UserID)+len(info.Info)+4)
	b = strconv.AppendInt(b, int64(len(info.UserID)), 10)
	b = append(b, ':')
	b = append(b, info.UserID...)
	return append(b, info.Info...)
}

func decodePresence(client, v string) (ClientInfo, bool) {
	i := strings.IndexByte(v, ':')
	if i < 0 {
		return ClientInfo{}, false
	}
	n, err := strconv.Atoi(v[:i])
	if err != nil || n < 0 || n > len(v)-i-1 {
		return ClientInfo{}, false
	}
	ci := ClientInfo{ClientID: client, UserID: v[i+1 : i+1+n]}
	if rest := v[i+1+n:]; rest != "" {
		ci.Info = []byte(rest)
	}
	return ci, true
}

func (r *Redis) presenceTTL() int64 { return max(r.cfg.PresenceTTL.Milliseconds(), 1) }

// AddPresence implements PresenceManager. The node keeps the entry and
// refreshes it every PresenceRefresh until RemovePresence, so it lives as
// long as this node does (plus at most PresenceTTL). When Redis is down
// it returns the error but keeps the entry, which the next refresh adds.
func (r *Redis) AddPresence(ctx context.Context, channel string, info ClientInfo) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	info.Info = bytes.Clone(info.Info)
	sh := r.shard(channel)
	sh.pmu.Lock()
	m := sh.presence[channel]
	if m == nil {
		m = make(map[string]ClientInfo)
		sh.presence[channel] = m
	}
	m[info.ClientID] = info
	sh.pmu.Unlock()
	ctx, cancel := r.opCtx(ctx)
	defer cancel()
	err := addPresenceScript.Run(ctx, r.c, sh.presenceKeys(channel), info.ClientID, encodePresence(info), r.presenceTTL()).Err()
	if err != nil {
		return redisErr("add presence", channel, err)
	}
	return nil
}

// RemovePresence implements PresenceManager. The node stops refreshing
// the entry even when Redis cannot be told, so it expires within
// PresenceTTL.
func (r *Redis) RemovePresence(ctx context.Context, channel, clientID string) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	sh := r.shard(channel)
	sh.pmu.Lock()
	if m := sh.presence[channel]; m != nil {
		delete(m, clientID)
		if len(m) == 0 {
			delete(sh.presence, channel)
		}
	}
	sh.pmu.Unlock()
	ctx, cancel := r.opCtx(ctx)
	defer cancel()
	if err := removePresenceScript.Run(ctx, r.c, sh.presenceKeys(channel), clientID).Err(); err != nil {
		return redisErr("remove presence", channel, err)
	}
	return nil
}

// Presence implements PresenceManager: the clients of every node.
func (r *Redis) Presence(ctx context.Context, channel string) (map[string]ClientInfo, error) {
	if err := r.check(ctx); err != nil {
		return nil, err
	}
	ctx, cancel := r.opCtx(ctx)
	defer cancel()
	res, err := presenceScript.Run(ctx, r.c, r.shard(channel).presenceKeys(channel)).StringSlice()
	if err != nil {
		return nil, redisErr("presence", channel, err)
	}
	out := make(map[string]ClientInfo, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		ci, ok := decodePresence(res[i], res[i+1])
		if !ok {
			return nil, redisErr("presence", channel, errBadReply)
		}
		out[ci.ClientID] = ci
	}
	return out, nil
}

// PresenceStats implements PresenceManager, in O(1) on Redis.
func (r *Redis) PresenceStats(ctx context.Context, channel string) (PresenceStats, error) {
	if err := r.check(ctx); err != nil {
		return PresenceStats{}, err
	}
	ctx, cancel := r.opCtx(ctx)
	defer cancel()
	res, err := presenceStatsScript.Run(ctx, r.c, r.shard(channel).presenceKeys(channel)).Int64Slice()
	if err != nil {
		return PresenceStats{}, redisErr("presence stats", channel, err)
	}
	if len(res) != 3 {
		return PresenceStats{}, redisErr("presence stats", channel, errBadReply)
	}
	return PresenceStats{NumClients: int(res[0]), NumUsers: int(res[1] + res[2])}, nil
}

// refreshPresence is the presence refresher goroutine: every
// PresenceRefresh it extends the expiry of this node's entries, a few
// hundred channels per round trip, and adds again in full those Redis no
// longer has (expired while Redis was unreachable, or lost with its data).
func (r *Redis) refreshPresence() {
	defer r.wg.Done()
	t := time.NewTicker(r.cfg.PresenceRefresh)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		for _, sh := range r.shards {
			if err := sh.refreshPresence(); err != nil {
				r.stats.presenceErrors.Add(1)
			}
		}
	}
}

func (sh *redisShard) refreshPresence() error {
	type batch struct {
		channel string
		clients []string
	}
	sh.pmu.Lock()
	all := make([]batch, 0, len(sh.presence))
	for ch, m := range sh.presence {
		ids := make([]string, 0, len(m))
		for id := range m {
			ids = append(ids, id)
		}
		all = append(all, batch{ch, ids})
	}
	sh.pmu.Unlock()

	var firstErr error
	ttl := sh.r.presenceTTL()
	for len(all) > 0 {
		n := min(len(all), maxRefreshBatch)
		part := all[:n]
		all = all[n:]
		ctx, cancel := sh.r.opCtx(sh.r.ctx)
		pipe := sh.r.c.Pipeline()
		cmds := make([]*redis.Cmd, len(part))
		for i, b := range part {
			args := make([]any, 0, len(b.clients)+1)
			args = append(args, ttl)
			for _, id := range b.clients {
				args = append(args, id)
			}
			cmds[i] = refreshPresenceScript.Run(ctx, pipe, sh.presenceKeys(b.channel), args...)
		}
		pipe.Exec(ctx) // errors are per command
		for i, b := range part {
			missing, err := cmds[i].StringSlice()
			if redis.HasErrorPrefix(err, "NOSCRIPT") {
				err = refreshPresenceScript.Load(ctx, sh.r.c).Err()
				if err == nil {
					missing = b.clients // all of them, added below
				}
			}
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
			if err := sh.readdPresence(ctx, b.channel, missing); err != nil && firstErr == nil {
				firstErr = err
			}
		}
		cancel()
	}
	return firstErr
}

// readdPresence adds again the clients of the channel that Redis lost and
// this node still has.
func (sh *redisShard) readdPresence(ctx context.Context, channel string, clients []string) error {
	if len(clients) == 0 {
		return nil
	}
	infos := make([]ClientInfo, 0, len(clients))
	sh.pmu.Lock()
	for _, id := range clients {
		if ci, ok := sh.presence[channel][id]; ok {
			infos = append(infos, ci)
		}
	}
	sh.pmu.Unlock()
	keys := sh.presenceKeys(channel)
	for _, ci := range infos {
		if err := addPresenceScript.Run(ctx, sh.r.c, keys, ci.ClientID, encodePresence(ci), sh.r.presenceTTL()).Err(); err != nil {
			return err
		}
	}
	return nil
}
