"""Lua scripts of the Redis store. Each one touches the keys of one visitor only (one hash
slot), so they run unchanged on Redis Cluster."""

from __future__ import annotations

from pathlib import Path

# Decide-time read of a visitor plus the page-view write; see load_visitor.lua.
LOAD_VISITOR_SCRIPT = Path(__file__).with_name("load_visitor.lua").read_text(encoding="utf-8")

# Apply one visitor's events atomically; see the comments at the top of events.lua.
EVENTS_SCRIPT = Path(__file__).with_name("events.lua").read_text(encoding="utf-8")

# Claim an anonymous visitor for a merge into ARGV[1]: set its alias (from now on its events
# are redirected) and return its event log, or the id it was already merged into, or
# "erased" when it was erased at or after the identify's receipt.
# KEYS: alias, log, erased (of the anonymous visitor). ARGV: customer id, TTL of the alias,
# when the identify was received.
BEGIN_MERGE_SCRIPT = """
if tonumber(redis.call('GET', KEYS[3]) or '-1') >= tonumber(ARGV[3]) then
  return {'erased', ''}
end
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then
  return {'conflict', current}
end
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return {'merge', redis.call('LRANGE', KEYS[2], 0, -1)}
"""

# blend(profile key, score JSON): blend a decayed score into a profile hash, as
# journeygate.store.decay.blended does. The score: {"f": field, "v": value, "t": event time,
# "h": half-life in seconds, "d": {detail field: its JSON text}}. Stored fields that are not
# numbers count as absent; the value is written with 4 decimals, the time with 3.
BLEND_FUNCTION = """
local function blend(profile, encoded)
  local score = cjson.decode(encoded)
  local time_field = score.f .. '_at'
  local stored = redis.call('HMGET', profile, score.f, time_field)
  local previous, since = tonumber(stored[1]), tonumber(stored[2])
  local value, at, newest = score.v, score.t, true
  if previous and since then
    newest = at >= since
    local old, old_at, new = previous, since, value
    if not newest then
      old, old_at, new = value, at, previous
      at = since
    end
    local weight = 0.5 ^ ((at - old_at) / score.h)
    value = (weight * weight * old + new) / (1 + weight)
  end
  redis.call('HSET', profile, score.f, string.format('%.4f', value),
             time_field, string.format('%.3f', at))
  if newest then
    for name, text in pairs(score.d) do
      redis.call('HSET', profile, name, text)
    end
  end
end
"""

# Blend a decayed score into a visitor's profile, or answer the id it was merged into
# (nothing written: the caller blends there). KEYS: profile, alias. ARGV: the score (see
# BLEND_FUNCTION), the profile TTL. Returns {} when written, else {merged into}.
BLEND_SCRIPT = (
    BLEND_FUNCTION
    + """
local target = redis.call('GET', KEYS[2])
if target then
  return {target}
end
blend(KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {}
"""
)

# Record an anonymous visitor merged into the customer, unless the customer was erased at or
# after the identify's receipt; the first time it is recorded, blend the anonymous visitor's
# decayed scores into the customer's profile (once: a merge done again after a crash finds it
# recorded). KEYS: aliases, erased, profile (of the customer). ARGV: anonymous id, TTL of the
# aliases and profile, when the identify was received, then one score per argument (see
# BLEND_FUNCTION). Returns 1 when recorded (now or before), else 0.
LINK_MERGE_SCRIPT = (
    BLEND_FUNCTION
    + """
if tonumber(redis.call('GET', KEYS[2]) or '-1') >= tonumber(ARGV[3]) then
  return 0
end
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 and #ARGV > 3 then
  for i = 4, #ARGV do
    blend(KEYS[3], ARGV[i])
  end
  redis.call('EXPIRE', KEYS[3], ARGV[2])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
)

# Delete one visitor's data. ARGV[1] = "erase": everything, then leave a tombstone (ARGV[2]:
# the erasure time, ARGV[3]: its TTL) so that events received before now are dropped;
# "merged": only what the event worker built (the visitor's history now lives in the profile
# it was merged into; the alias stays). KEYS: keys.ERASE_SCRIPT_KEYS (1-11: built by the
# worker, 12-15: views, sessions, alias, aliases, 16: erased), then the session prefixes
# "jg:{v}:es:" (17) and "jg:{v}:session:" (18), whose session ids are read here.
ERASE_SCRIPT = """
local erase = ARGV[1] == 'erase'
local removed = 0
local function drop(...)
  removed = removed + redis.call('DEL', ...)
end
for _, sid in ipairs(redis.call('ZRANGE', KEYS[8], 0, -1)) do
  local s = KEYS[17] .. sid
  drop(s, s .. ':products', s .. ':categories', s .. ':pages', s .. ':searches')
end
local aliases = {}
if erase then
  for _, sid in ipairs(redis.call('ZRANGE', KEYS[13], 0, -1)) do
    drop(KEYS[18] .. sid, KEYS[18] .. sid .. ':views')
  end
  aliases = redis.call('SMEMBERS', KEYS[15])
  drop(KEYS[12], KEYS[13], KEYS[14], KEYS[15])
  redis.call('SET', KEYS[16], ARGV[2], 'EX', ARGV[3])
end
drop(unpack(KEYS, 1, 11))
return {removed, aliases}
"""

# Set a journey stage when it differs from the stored one (a compare-and-set, so decisions
# racing on one visitor record one transition). KEYS: profile. ARGV: the stage (JSON, as
# profile fields are stored), the time (JSON number), the profile TTL.
# Returns {stored stage before (JSON; false: none)}, or {} when nothing changed.
STAGE_SCRIPT = """
local current = redis.call('HGET', KEYS[1], 'stage')
if current == ARGV[1] then
  return {}
end
redis.call('HSET', KEYS[1], 'stage', ARGV[1], 'stage_since', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {current}
"""

# object_field(key, field): a profile field holding a JSON object, as a table of its string
# keys (an unreadable value, or an array, reads as empty); write_object_field stores one back
# and refreshes the profile's TTL.
OBJECT_FIELD_FUNCTIONS = """
local function object_field(key, field)
  local ok, decoded = pcall(cjson.decode, redis.call('HGET', key, field) or '{}')
  local object = {}
  if ok and type(decoded) == 'table' then
    for name, value in pairs(decoded) do
      if type(name) == 'string' then  -- an array decodes with number keys: not an object
        object[name] = value
      end
    end
  end
  return object
end
local function write_object_field(key, field, object, ttl)
  redis.call('HSET', key, field, cjson.encode(object))
  redis.call('EXPIRE', key, ttl)
end
"""

# Add a time to lists in a JSON profile field, {name: [epoch seconds, oldest first]}, in one
# step, so that concurrent writers (decisions showing a frequency-capped offer) all count.
# Drops the times before the window and the names left without any; keeps each name's newest.
# KEYS: profile. ARGV: the field, the time, the window (seconds), how many times a name keeps,
# the profile TTL, then the names (a name given twice gets the time twice).
RECORD_TIMES_SCRIPT = (
    OBJECT_FIELD_FUNCTIONS
    + """
local at, keep = tonumber(ARGV[2]), tonumber(ARGV[4])
local cutoff = at - tonumber(ARGV[3])
local lists = {}
for name, times in pairs(object_field(KEYS[1], ARGV[1])) do
  if type(times) == 'table' then
    local recent = {}
    for _, t in ipairs(times) do
      if type(t) == 'number' and t > cutoff then
        recent[#recent + 1] = t
      end
    end
    lists[name] = recent
  end
end
for i = 6, #ARGV do
  local times = lists[ARGV[i]] or {}
  times[#times + 1] = at
  lists[ARGV[i]] = times
end
local kept = {}
for name, times in pairs(lists) do
  if #times > 0 then
    table.sort(times)
    kept[name] = {unpack(times, math.max(1, #times - keep + 1))}
  end
end
write_object_field(KEYS[1], ARGV[1], kept, ARGV[5])
return 1
"""
)

# KEYS: profile hash. ARGV: field, TTL, then name, epoch seconds pairs: the later time of each
# name is kept in the field's JSON object.
MERGE_LATEST_SCRIPT = (
    OBJECT_FIELD_FUNCTIONS
    + """
local stored = object_field(KEYS[1], ARGV[1])
for i = 3, #ARGV, 2 do
  local name, at = ARGV[i], tonumber(ARGV[i + 1])
  local old = stored[name]
  if type(old) ~= 'number' or old < at then
    stored[name] = at
  end
end
write_object_field(KEYS[1], ARGV[1], stored, ARGV[2])
return 1
"""
)
