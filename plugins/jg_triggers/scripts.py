"""The Lua scripts of the Redis trigger store. Each one touches the keys of a single hash slot
(one visitor, or one timer shard), declared in KEYS, so it runs unchanged on Redis Cluster."""

# KEYS: state hash. ARGV: expected version, ttl (ms), n, n x (field, JSON), m, m x field.
# The visitor's trigger state is written only if nobody wrote it since it was read.
SAVE_STATE = """
local version = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if version ~= tonumber(ARGV[1]) then
  return 0
end
local i = 4
for _ = 1, tonumber(ARGV[3]) do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
local deleted = tonumber(ARGV[i])
i = i + 1
for _ = 1, deleted do
  redis.call('HDEL', KEYS[1], ARGV[i])
  i = i + 1
end
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: due zset, timer hash. ARGV: cap, then (id, due, payload) triples. Returns how many
# new timers were refused because the shard holds `cap` of them (moving one is never refused).
SET_TIMERS = """
local cap = tonumber(ARGV[1])
local size = redis.call('ZCARD', KEYS[1])
local refused = 0
for i = 2, #ARGV, 3 do
  local id = ARGV[i]
  if size >= cap and not redis.call('ZSCORE', KEYS[1], id) then
    refused = refused + 1
  else
    size = size + redis.call('ZADD', KEYS[1], ARGV[i + 1], id)
    redis.call('HSET', KEYS[2], id, ARGV[i + 2])
  end
end
return refused
"""

# KEYS: due zset, timer hash. ARGV: ids. Returns how many timers existed.
CANCEL_TIMERS = """
local removed = 0
for i = 1, #ARGV do
  removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
end
return removed
"""

# KEYS: due zset, timer hash. ARGV: now, lease_until, limit. Due timers move to lease_until
# (held by this caller until then) and come back as id, payload pairs.
CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local claimed = {}
for _, id in ipairs(ids) do
  local payload = redis.call('HGET', KEYS[2], id)
  if payload then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id)
    claimed[#claimed + 1] = id
    claimed[#claimed + 1] = payload
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return claimed
"""

# KEYS: due zset, timer hash. ARGV: lease, ids. A timer is removed only while it is still at
# the lease it was claimed with: one moved meanwhile (re-armed, deferred, set again by a new
# event) stays, and one whose lease ran out and was claimed by another scheduler is that
# scheduler's to finish.
FINISH = """
local lease = tonumber(ARGV[1])
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == lease then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
end
return 1
"""

# KEYS: state hash. ARGV: occurrence, trigger, action, now, debounce_s, cap_count,
# cap_window_s, keep_s, fires_kept, ttl (ms). Fires are [occurrence, trigger, action, time].
# Returns {outcome, last-fired JSON}: an occurrence already let through is let through again
# (the outbox drops the duplicate); else debounce and the cap may suppress it; else it is
# recorded.
GUARD = """
local raw = redis.call('HGET', KEYS[1], 'fires')
local fires = raw and cjson.decode(raw) or {}
local last_raw = redis.call('HGET', KEYS[1], 'last') or '{}'
local occurrence, trigger, action = ARGV[1], ARGV[2], ARGV[3]
local now = tonumber(ARGV[4])
for _, fire in ipairs(fires) do
  if fire[1] == occurrence then
    return {'replay', last_raw}
  end
end
local debounce = tonumber(ARGV[5])
if debounce > 0 then
  for _, fire in ipairs(fires) do
    if fire[2] == trigger and now - fire[4] < debounce then
      return {'debounce', last_raw}
    end
  end
end
local cap = tonumber(ARGV[6])
if cap > 0 then
  local window, count = tonumber(ARGV[7]), 0
  for _, fire in ipairs(fires) do
    if fire[3] == action and now - fire[4] < window then
      count = count + 1
    end
  end
  if count >= cap then
    return {'cap', last_raw}
  end
end
local keep, kept = tonumber(ARGV[8]), {}
for _, fire in ipairs(fires) do
  if now - fire[4] < keep then
    kept[#kept + 1] = fire
  end
end
kept[#kept + 1] = {occurrence, trigger, action, now}
while #kept > tonumber(ARGV[9]) do
  table.remove(kept, 1)
end
local last = cjson.decode(last_raw)
last[trigger] = now
last_raw = cjson.encode(last)
redis.call('HSET', KEYS[1], 'fires', cjson.encode(kept), 'last', last_raw)
redis.call('PEXPIRE', KEYS[1], ARGV[10])
return {'ok', last_raw}
"""
