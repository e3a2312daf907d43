"""Lua scripts of the Redis store. Each one touches the keys of one visitor only (one hash
slot), so they run unchanged on Redis Cluster."""

from __future__ import annotations

from pathlib import Path

# Decide-time read of a visitor plus the page-view write; see load_visitor.lua.
LOAD_VISITOR_SCRIPT = Path(__file__).with_name("load_visitor.lua").read_text(encoding="utf-8")

# Apply one visitor's events atomically; see the comments at the top of events.lua.
EVENTS_SCRIPT = Path(__file__).with_name("events.lua").read_text(encoding="utf-8")

# Claim an anonymous visitor for a merge into ARGV[2]: set its alias (from now on its events
# are redirected) and return its event log, or the id it was already merged into.
BEGIN_MERGE_SCRIPT = """
local P = ARGV[1]
local current = redis.call('GET', P .. 'alias')
if current and current ~= ARGV[2] then
  return {'conflict', current}
end
if not current then
  redis.call('SET', P .. 'alias', ARGV[2], 'EX', ARGV[3])
end
return {'merge', redis.call('LRANGE', P .. 'log', 0, -1)}
"""

# Delete one visitor's data. ARGV[2] = "erase": everything, then leave a tombstone so that
# events received before now are dropped; "merged": only what the event worker built (the
# visitor's history now lives in the profile it was merged into; the alias stays).
ERASE_SCRIPT = """
local P = ARGV[1]
local erase = ARGV[2] == 'erase'
local removed = 0
local function drop(...)
  removed = removed + redis.call('DEL', ...)
end
for _, sid in ipairs(redis.call('ZRANGE', P .. 'esessions', 0, -1)) do
  local s = P .. 'es:' .. sid
  drop(s, s .. ':products', s .. ':categories', s .. ':pages', s .. ':searches')
end
local aliases = {}
if erase then
  for _, sid in ipairs(redis.call('ZRANGE', P .. 'sessions', 0, -1)) do
    drop(P .. 'session:' .. sid, P .. 'session:' .. sid .. ':views')
  end
  aliases = redis.call('SMEMBERS', P .. 'aliases')
  drop(P .. 'views', P .. 'sessions', P .. 'alias', P .. 'aliases')
  redis.call('SET', P .. 'erased', ARGV[3], 'EX', ARGV[4])
end
drop(P .. 'profile', P .. 'channels', P .. 'categories', P .. 'purchased', P .. 'orders',
     P .. 'cart', P .. 'consents', P .. 'esessions', P .. 'seen', P .. 'log')
return {removed, aliases}
"""
