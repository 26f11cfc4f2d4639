package broker

import "github.com/redis/go-redis/v9"

// The Lua scripts run atomically in Redis, so offsets are assigned, history
// is trimmed and a publication is sent to subscribers as one step: the
// pub/sub delivery order of a channel is its offset order.
//
// A stream is two keys of one hash slot: a hash (field "o" the last offset,
// "e" the epoch, "r" the replication ID of the master that wrote it) and a
// list of the retained publications, oldest first,
// each stored as "<expires at, unix ms, 0 never>:<data>". The retained
// offsets are contiguous and end at the top offset, so the offset of list
// index i is top-len+1+i. Time is Redis's own (TIME), so nodes with skewed
// clocks agree on expiry.

// luaPrelude holds the helpers every script shares.
const luaPrelude = `
local function nowms()
  local t = redis.call('time')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function replid()
  return string.match(redis.call('info', 'replication'), 'master_replid:(%x+)')
end
local function trimexpired(list, now)
  while true do
    local v = redis.call('lindex', list, 0)
    if not v then return end
    local exp = tonumber(string.sub(v, 1, string.find(v, ':', 1, true) - 1))
    if exp == 0 or now < exp then return end
    redis.call('lpop', list)
  end
end
`

// publishScript: KEYS meta, list; ARGV data, history size, TTL in ms (0
// none), the epoch for a new stream, the pub/sub channel, the publish
// command. Returns {offset, epoch}.
//
// A stream last written under another replication ID than the master's
// now starts again under the new epoch. Replication is asynchronous: a
// replica promoted by Sentinel (or a Cluster failover, or a crashed master
// restarted from its AOF or RDB under a new ID) may lack the last
// publications the old master numbered and sent, and continuing the old
// epoch would number new publications with offsets that subscribers and
// clients already hold for others (silently dropped as duplicates, or
// recovered as if they were the old ones). Whether anything was lost cannot be known from the promoted
// copy, so every stream's next publication after a master change starts a
// new epoch. A stream without "r" (written before the field existed)
// adopts the master's.
//
// The stream outlives its newest publication: a TTL publish extends the
// stream's expiry to at least the TTL, a publish without TTL makes it
// persistent (as Memory does). The list always carries the hash's expiry,
// so neither key outlives the other.
var publishScript = redis.NewScript(publishLua)

const publishLua = luaPrelude + `
local meta, list = KEYS[1], KEYS[2]
local rid = replid()
local e, r = unpack(redis.call('hmget', meta, 'e', 'r'))
if not e or (r and r ~= rid) then
  e = ARGV[4]
  redis.call('del', list)
  redis.call('hset', meta, 'e', e, 'o', 0)
end
if r ~= rid then redis.call('hset', meta, 'r', rid) end
local top = redis.call('hincrby', meta, 'o', 1)
local now = nowms()
local ttl = tonumber(ARGV[3])
local exp = 0
if ttl > 0 then exp = now + ttl end
redis.call('rpush', list, exp .. ':' .. ARGV[1])
redis.call('ltrim', list, -tonumber(ARGV[2]), -1)
trimexpired(list, now)
if ttl > 0 then
  if redis.call('pttl', meta) < ttl then redis.call('pexpire', meta, ttl) end
else
  redis.call('persist', meta)
end
local m = redis.call('pttl', meta)
if m > 0 then redis.call('pexpire', list, m) else redis.call('persist', list) end
redis.call(ARGV[6], ARGV[5], top .. ':' .. e .. ':' .. ARGV[1])
return {top, e}
`

// historyScript: KEYS meta, list; ARGV the epoch for a new stream, the
// empty-stream TTL in ms, "1" when since is given, since offset, since
// epoch, limit (negative: all). Returns {top, epoch, first returned offset,
// {entries}}.
//
// A missing stream is created empty with the new epoch and the empty-stream
// TTL; reading an empty stream again renews that TTL, so the epoch of a
// quiet channel that clients keep subscribing to stays.
var historyScript = redis.NewScript(luaPrelude + `
local meta, list = KEYS[1], KEYS[2]
local e = redis.call('hget', meta, 'e')
if not e then
  e = ARGV[1]
  redis.call('del', list)
  redis.call('hset', meta, 'e', e, 'o', 0, 'r', replid())
  redis.call('pexpire', meta, ARGV[2])
  return {0, e, 1, {}}
end
local top = tonumber(redis.call('hget', meta, 'o'))
if top == 0 then redis.call('pexpire', meta, ARGV[2]) end
trimexpired(list, nowms())
local n = redis.call('llen', list)
local first = top - n + 1
local limit = tonumber(ARGV[6])
local from
if ARGV[3] == '1' then
  local since = tonumber(ARGV[4])
  if ARGV[5] ~= e or since > top then return {top, e, top + 1, {}} end
  from = math.max(since + 1, first)
else
  from = first
  if limit >= 0 and n > limit then from = top - limit + 1 end
end
local count = top + 1 - from
if limit >= 0 and count > limit then count = limit end
if count <= 0 then return {top, e, from, {}} end
return {top, e, from, redis.call('lrange', list, from - first, from - first + count - 1)}
`)

// canaryScript: KEYS a key of the shard's slot; ARGV node id, TTL in ms,
// the canary channel, the publish command. It writes the key (expiring)
// and publishes the node id, so a canary proves that the shard's master
// accepts writes as well as that pub/sub delivers.
var canaryScript = redis.NewScript(`
redis.call('set', KEYS[1], ARGV[1], 'px', ARGV[2])
return redis.call(ARGV[4], ARGV[3], ARGV[1])
`)

// Presence of a channel is three keys of one hash slot: a hash client id →
// "<len(user)>:<user><info>", a sorted set client id → expiry (unix ms),
// and a hash of user counts ("u<user>" → connections, "a" → anonymous
// connections) so that PresenceStats is O(1). Every script first drops the
// expired clients, keeping the counts exact; every write renews the keys'
// expiry, so a channel whose clients all stopped being refreshed vanishes.
const luaPresencePrelude = luaPrelude + `
local kh, kz, ku = KEYS[1], KEYS[2], KEYS[3]
local function userfield(v)
  local i = string.find(v, ':', 1, true)
  local n = tonumber(string.sub(v, 1, i - 1))
  if n == 0 then return 'a' end
  return 'u' .. string.sub(v, i + 1, i + n)
end
local function unuser(v)
  local f = userfield(v)
  if redis.call('hincrby', ku, f, -1) <= 0 then redis.call('hdel', ku, f) end
end
local function expire(now)
  local gone = redis.call('zrangebyscore', kz, '-inf', now)
  for _, c in ipairs(gone) do
    local v = redis.call('hget', kh, c)
    if v then
      unuser(v)
      redis.call('hdel', kh, c)
    end
  end
  if #gone > 0 then redis.call('zremrangebyscore', kz, '-inf', now) end
end
local function renew(ttl)
  redis.call('pexpire', kh, ttl)
  redis.call('pexpire', kz, ttl)
  redis.call('pexpire', ku, ttl)
end
local now = nowms()
expire(now)
`

// addPresenceScript: ARGV client id, encoded value, TTL in ms.
var addPresenceScript = redis.NewScript(luaPresencePrelude + `
local ttl = tonumber(ARGV[3])
local old = redis.call('hget', kh, ARGV[1])
if old then unuser(old) end
redis.call('hset', kh, ARGV[1], ARGV[2])
redis.call('hincrby', ku, userfield(ARGV[2]), 1)
redis.call('zadd', kz, now + ttl, ARGV[1])
renew(ttl)
return 1
`)

// refreshPresenceScript: ARGV TTL in ms, client ids. Extends the expiry of
// the clients still present and returns the ids that are not (expired, or
// lost with Redis's data), for the caller to add again in full.
var refreshPresenceScript = redis.NewScript(luaPresencePrelude + `
local ttl = tonumber(ARGV[1])
local missing = {}
for i = 2, #ARGV do
  if redis.call('zscore', kz, ARGV[i]) then
    redis.call('zadd', kz, now + ttl, ARGV[i])
  else
    missing[#missing + 1] = ARGV[i]
  end
end
if #missing < #ARGV - 1 then renew(ttl) end
return missing
`)

// removePresenceScript: ARGV client id.
var removePresenceScript = redis.NewScript(luaPresencePrelude + `
local old = redis.call('hget', kh, ARGV[1])
if old then
  unuser(old)
  redis.call('hdel', kh, ARGV[1])
  redis.call('zrem', kz, ARGV[1])
end
return 1
`)

// presenceScript returns the flat {client id, value, ...} of the channel.
var presenceScript = redis.NewScript(luaPresencePrelude + `
return redis.call('hgetall', kh)
`)

// presenceStatsScript returns {clients, named users, anonymous clients}.
var presenceStatsScript = redis.NewScript(luaPresencePrelude + `
local anon = tonumber(redis.call('hget', ku, 'a') or '0')
local users = redis.call('hlen', ku)
if anon > 0 then users = users - 1 end
return {redis.call('hlen', kh), users, anon}
`)
