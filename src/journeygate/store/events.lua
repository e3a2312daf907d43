-- Apply one visitor's events atomically (journeygate.store.redis.RedisProfileStore).
-- KEYS[1]: the visitor's profile hash (routes the call to the visitor's slot).
-- ARGV[1]: the visitor's key prefix "jg:{v}:"; ARGV[2]: settings (JSON);
-- ARGV[3..]: events (JSON, see journeygate.events.schema), ordered by event time.
-- Returns "@ID" when the visitor was merged into ID (the caller applies there instead),
-- else one flag per event: "1" applied, "0" skipped (a duplicate, or received before an
-- erasure). Every key touched gets its TTL; every collection is capped.
local P = ARGV[1]
local cfg = cjson.decode(ARGV[2])
local alias = redis.call('GET', P .. 'alias')
if alias then
  return '@' .. alias
end
local now = cfg.now
local erased = tonumber(redis.call('GET', P .. 'erased') or '-1')
local profile = P .. 'profile'
local seen = P .. 'seen'
local cart = P .. 'cart'
local sessions = P .. 'esessions'
local touched = {}
local flags = {}
local applied = false
local logged = false

local function fmt(x)
  return string.format('%.3f', x)
end

local function hmin(key, field, value)
  local cur = tonumber(redis.call('HGET', key, field))
  if not cur or value < cur then
    redis.call('HSET', key, field, fmt(value))
  end
end

local function hmax(key, field, value)
  local cur = tonumber(redis.call('HGET', key, field))
  if not cur or value > cur then
    redis.call('HSET', key, field, fmt(value))
  end
end

-- keep the `max` highest-scored members
local function zcap(key, max)
  local n = redis.call('ZCARD', key)
  if n > max then
    redis.call('ZREMRANGEBYRANK', key, 0, n - max - 1)
  end
end

local function session_for(e)
  local t = e.t
  local sid = e.s
  if not sid then
    local found = redis.call('ZREVRANGEBYSCORE', sessions, t + cfg.gap, '-inf', 'LIMIT', 0, 1)
    if found[1] then
      local last = tonumber(redis.call('HGET', P .. 'es:' .. found[1], 'last'))
      if last and t <= last + cfg.gap then
        sid = found[1]
      end
    end
    if not sid then
      sid = 'a' .. string.format('%d', math.floor(t * 1000))
    end
  end
  local skey = P .. 'es:' .. sid
  local start = tonumber(redis.call('HGET', skey, 'start'))
  if not start or t < start then
    redis.call('HSET', skey, 'start', fmt(t))
    redis.call('ZADD', sessions, t, sid)
  end
  hmax(skey, 'last', t)
  touched[sid] = true
  return skey
end

local function cart_base()
  return tonumber(redis.call('HGET', cart, '_at')) or -1
end

local function cart_snapshot(t, items)
  if t < cart_base() then
    return
  end
  redis.call('DEL', cart)
  redis.call('HSET', cart, '_at', fmt(t))
  for _, item in ipairs(items) do
    redis.call('HINCRBY', cart, 'q:' .. item.pid, item.qty)
    if item.price then
      redis.call('HSET', cart, 'p:' .. item.pid, item.price)
    end
  end
end

local function affinity(category, weight)
  redis.call('ZINCRBY', P .. 'categories', weight, category)
  zcap(P .. 'categories', cfg.categories)
end

local function apply(e)
  local x = e.x or {}
  local k = e.k
  local t = e.t
  redis.call('HINCRBY', profile, 'events', 1)
  hmin(profile, 'first_seen', t)
  hmax(profile, 'last_seen', t)
  redis.call('HINCRBY', P .. 'channels', e.c, 1)
  if x.consents then
    for name, granted in pairs(x.consents) do
      local cur = redis.call('HGET', P .. 'consents', name)
      local at = cur and tonumber(string.match(cur, '|(.+)$'))
      if not at or t >= at then
        redis.call('HSET', P .. 'consents', name, (granted and '1' or '0') .. '|' .. fmt(t))
      end
    end
  end
  if k == 'identify' or k == 'alias' or k == 'consent' then
    return
  end
  local skey = session_for(e)
  redis.call('HINCRBY', skey, 'events', 1)
  redis.call('HINCRBY', skey, 'ch:' .. e.c, 1)
  if k == 'page_view' or k == 'screen_view' or k == 'product_view' then
    redis.call('HINCRBY', profile, 'page_views', 1)
    redis.call('HINCRBY', skey, 'pages', 1)
    redis.call('ZADD', skey .. ':pages', t, (x.pid or '') .. '\t' .. (x.path or '') .. '\t' .. e.id)
    zcap(skey .. ':pages', cfg.items)
    if x.pid then
      redis.call('HINCRBY', profile, 'product_views', 1)
      redis.call('ZINCRBY', skey .. ':products', 1, x.pid)
      zcap(skey .. ':products', cfg.items)
    end
  end
  if x.cat then
    redis.call('ZINCRBY', skey .. ':categories', 1, x.cat)
    zcap(skey .. ':categories', cfg.items)
    affinity(x.cat, k == 'cart_add' and 2 or 1)
  end
  if k == 'search' then
    redis.call('HINCRBY', profile, 'searches', 1)
    redis.call('HINCRBY', skey, 'searches', 1)
    redis.call('LPUSH', skey .. ':searches', x.q)
    redis.call('LTRIM', skey .. ':searches', 0, cfg.items - 1)
  elseif k == 'cart_add' or k == 'cart_remove' then
    local sign = 1
    if k == 'cart_remove' then
      sign = -1
    end
    if t >= cart_base() then
      redis.call('HINCRBY', cart, 'q:' .. x.pid, sign * x.qty)
      if x.price then
        redis.call('HSET', cart, 'p:' .. x.pid, x.price)
      end
    end
    redis.call('HINCRBY', skey, k == 'cart_add' and 'cart_adds' or 'cart_removes', 1)
    redis.call('HINCRBY', profile, k == 'cart_add' and 'cart_adds' or 'cart_removes', 1)
  elseif k == 'order' then
    local new = true
    if x.oid then
      if redis.call('ZSCORE', P .. 'orders', x.oid) then
        new = false
      else
        redis.call('ZADD', P .. 'orders', t, x.oid)
        zcap(P .. 'orders', cfg.orders)
      end
    end
    if new then
      redis.call('HINCRBY', profile, 'orders', 1)
      redis.call('HINCRBYFLOAT', profile, 'revenue', x.rev or 0)
      hmin(profile, 'first_order_at', t)
      hmax(profile, 'last_order_at', t)
      redis.call('HINCRBY', skey, 'orders', 1)
      redis.call('HINCRBYFLOAT', skey, 'revenue', x.rev or 0)
      for _, item in ipairs(x.items or {}) do
        local cur = tonumber(redis.call('ZSCORE', P .. 'purchased', item.pid))
        if not cur or t > cur then
          redis.call('ZADD', P .. 'purchased', t, item.pid)
        end
        if item.cat then
          affinity(item.cat, 3)
        end
      end
      zcap(P .. 'purchased', cfg.purchased)
      if t >= cart_base() then
        redis.call('DEL', cart)
        redis.call('HSET', cart, '_at', fmt(t))
      end
    end
  elseif k == 'order_refund' then
    redis.call('HINCRBY', profile, 'refunds', 1)
    redis.call('HINCRBYFLOAT', profile, 'refunded', x.rev or 0)
  elseif k == 'order_cancel' then
    redis.call('HINCRBY', profile, 'cancellations', 1)
  end
  if k == 'checkout_start' then
    redis.call('HINCRBY', profile, 'checkouts', 1)
    redis.call('HINCRBY', skey, 'checkouts', 1)
    hmax(profile, 'last_checkout_at', t)
  end
  if x.items and (k == 'cart_view' or k == 'checkout_start' or k == 'checkout_step') then
    cart_snapshot(t, x.items)
  end
end

redis.call('ZREMRANGEBYSCORE', seen, '-inf', '(' .. (now - cfg.dedupe_ttl))
for i = 3, #ARGV do
  local raw = ARGV[i]
  local e = cjson.decode(raw)
  if e.r <= erased or redis.call('ZSCORE', seen, e.id) then
    flags[#flags + 1] = '0'
  else
    redis.call('ZADD', seen, now, e.id)
    apply(e)
    if not e.u then
      redis.call('LPUSH', P .. 'log', raw)
      logged = true
    end
    flags[#flags + 1] = '1'
    applied = true
  end
end

if applied then
  zcap(seen, cfg.dedupe_max)
  redis.call('EXPIRE', seen, cfg.dedupe_ttl)
  for _, name in ipairs({'profile', 'channels', 'categories', 'purchased', 'orders', 'cart',
                         'consents'}) do
    redis.call('EXPIRE', P .. name, cfg.profile_ttl)
  end
  if logged then
    redis.call('LTRIM', P .. 'log', 0, cfg.log_max - 1)
    redis.call('EXPIRE', P .. 'log', cfg.profile_ttl)
  end
  local n = redis.call('ZCARD', sessions)
  if n > cfg.sessions then
    for _, sid in ipairs(redis.call('ZRANGE', sessions, 0, n - cfg.sessions - 1)) do
      local skey = P .. 'es:' .. sid
      redis.call('DEL', skey, skey .. ':products', skey .. ':categories', skey .. ':pages',
                 skey .. ':searches')
      touched[sid] = nil
    end
    redis.call('ZREMRANGEBYRANK', sessions, 0, n - cfg.sessions - 1)
  end
  if next(touched) then
    redis.call('EXPIRE', sessions, cfg.session_ttl)
  end
  for sid in pairs(touched) do
    local skey = P .. 'es:' .. sid
    for _, part in ipairs({'', ':products', ':categories', ':pages', ':searches'}) do
      redis.call('EXPIRE', skey .. part, cfg.session_ttl)
    end
  end
end
return table.concat(flags)
