-- Read a visitor's profile, view history and session, then record this page view and
-- session touch: the whole decide-time store work in one round trip and one script call.
-- All keys carry the visitor's hash tag, so this runs unchanged on Redis Cluster.
--
-- KEYS: profile, views, session, session views, sessions index, alias, consents
-- ARGV: history_max, session_views_max, profile_ttl_s, session_ttl_s,
--       page_view ('' for none), session_id ('' for none), now (unix seconds)
local history_max = tonumber(ARGV[1])
local session_views_max = tonumber(ARGV[2])
local page_view, session_id, now = ARGV[5], ARGV[6], ARGV[7]

-- A visitor merged into a customer (identify/alias) is answered from the customer's keys,
-- which live in another slot: hand the caller the customer's id instead of writing here.
local alias = redis.call('GET', KEYS[6])
if alias then
  return {alias}
end

local profile = redis.call('HGETALL', KEYS[1])
local consents = redis.call('HGETALL', KEYS[7])
local views = redis.call('LRANGE', KEYS[2], 0, history_max - 1)
local pages, session_views = false, {}
if session_id ~= '' then
  pages = redis.call('HGET', KEYS[3], 'pages')
  session_views = redis.call('LRANGE', KEYS[4], 0, session_views_max - 1)
end

if page_view ~= '' then
  redis.call('LPUSH', KEYS[2], page_view)
  redis.call('LTRIM', KEYS[2], 0, history_max - 1)
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
if session_id ~= '' then
  redis.call('HINCRBY', KEYS[3], 'pages', 1)
  redis.call('HSETNX', KEYS[3], 'started', now)
  redis.call('HSET', KEYS[3], 'last', now)
  redis.call('EXPIRE', KEYS[3], ARGV[4])
  if page_view ~= '' then
    redis.call('LPUSH', KEYS[4], page_view)
    redis.call('LTRIM', KEYS[4], 0, session_views_max - 1)
    redis.call('EXPIRE', KEYS[4], ARGV[4])
  end
  redis.call('ZADD', KEYS[5], now, session_id)
  redis.call('ZREMRANGEBYRANK', KEYS[5], 0, -history_max - 1)
  redis.call('EXPIRE', KEYS[5], ARGV[3])
end
return {profile, views, pages or '', session_views, consents}
