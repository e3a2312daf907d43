-- Apply one visitor's events atomically (journeygate.store.redis.RedisProfileStore).
-- KEYS (all with the visitor's hash tag, in keys.EVENT_SCRIPT_KEYS order): profile, alias,
-- erased, seen, cart, esessions, channels, consents, categories, purchased, orders, log, and
-- the per-session key prefix "jg:{v}:es:" (session ids are found inside the script, so each
-- session's keys are built from this declared prefix and share its slot).
-- ARGV[1]: settings (JSON); ARGV[2..]: events (JSON, see journeygate.events.schema), ordered
-- by event time.
-- Returns "@ID" when the visitor was merged into ID (the caller applies there instead),
-- else one flag per event: "1" applied, "0" skipped as a duplicate (its message id was
-- applied before), "-" skipped because it was received before an erasure. An event whose fields have the wrong type fails the call with an INVALIDEVENT
-- error before anything is written. Every key touched gets its TTL; every collection is
-- capped.
local profile, alias_key, erased_key, seen, cart, sessions = KEYS[1], KEYS[2], KEYS[3],
  KEYS[4], KEYS[5], KEYS[6]
local channels, consents, categories, purchased, orders, log = KEYS[7], KEYS[8], KEYS[9],
  KEYS[10], KEYS[11], KEYS[12]
local session_prefix = KEYS[13]
local cfg = cjson.decode(ARGV[1])
local alias = redis.call('GET', alias_key)
if alias then
  return '@' .. alias
end
local now = cfg.now
local erased = tonumber(redis.call('GET', erased_key) or '-1')
local touched = {}
local flags = {}
local applied = false
local logged = false

-- The types the code below relies on, checked for every event before the first write, so a
-- malformed event fails the whole call cleanly instead of half-applying.
local function is(value, kind)
  return type(value) == kind
end
local function integer(value)
  return is(value, 'number') and value == math.floor(value)
end
local function optional(value, kind)
  return value == nil or is(value, kind)
end
local function invalid(e)
  if not (is(e, 'table') and is(e.id, 'string') and is(e.k, 'string') and is(e.c, 'string')
          and is(e.t, 'number') and is(e.r, 'number') and optional(e.s, 'string')
          and optional(e.u, 'string') and optional(e.x, 'table')) then
    return 'id, k, c, t, r, s, u or x'
  end
  local x = e.x or {}
  if not (optional(x.pid, 'string') and optional(x.cat, 'string') and optional(x.path, 'string')
          and optional(x.oid, 'string') and optional(x.rev, 'number')
          and optional(x.price, 'number') and optional(x.consents, 'table')
          and optional(x.items, 'table')) then
    return 'x'
  end
  if e.k == 'search' and not is(x.q, 'string') then
    return 'x.q'
  end
  if (e.k == 'cart_add' or e.k == 'cart_remove') and not (is(x.pid, 'string') and integer(x.qty)) then
    return 'x.pid or x.qty'
  end
  for _, item in ipairs(x.items or {}) do
    if not (is(item, 'table') and is(item.pid, 'string') and integer(item.qty)
            and optional(item.cat, 'string') and optional(item.price, 'number')) then
      return 'x.items'
    end
  end
  return nil
end

local events = {}
for i = 2, #ARGV do
  local ok, e = pcall(cjson.decode, ARGV[i])
  local why = 'JSON'
  if ok then
    why = invalid(e)
  end
  if why then
    return redis.error_reply('INVALIDEVENT event ' .. (i - 1) .. ' has a malformed ' .. why)
  end
  events[#events + 1] = e
end

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
      local last = tonumber(redis.call('HGET', session_prefix .. found[1], 'last'))
      if last and t <= last + cfg.gap then
        sid = found[1]
      end
    end
    if not sid then
      sid = 'a' .. string.format('%d', math.floor(t * 1000))
    end
  end
  local skey = session_prefix .. sid
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
  redis.call('ZINCRBY', categories, weight, category)
  zcap(categories, cfg.categories)
end

local function apply(e)
  local x = e.x or {}
  local k = e.k
  local t = e.t
  redis.call('HINCRBY', profile, 'events', 1)
  hmin(profile, 'first_seen', t)
  hmax(profile, 'last_seen', t)
  redis.call('HINCRBY', channels, e.c, 1)
  if x.consents then
    for name, granted in pairs(x.consents) do
      local cur = redis.call('HGET', consents, name)
      local at = cur and tonumber(string.match(cur, '|(.+)$'))
      if not at or t >= at then
        redis.call('HSET', consents, name, (granted and '1' or '0') .. '|' .. fmt(t))
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
      if redis.call('ZSCORE', orders, x.oid) then
        new = false
      else
        redis.call('ZADD', orders, t, x.oid)
        zcap(orders, cfg.orders)
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
        local cur = tonumber(redis.call('ZSCORE', purchased, item.pid))
        if not cur or t > cur then
          redis.call('ZADD', purchased, t, item.pid)
        end
        if item.cat then
          affinity(item.cat, 3)
        end
      end
      zcap(purchased, cfg.purchased)
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
for i, e in ipairs(events) do
  if e.r <= erased then
    flags[#flags + 1] = '-'
  elseif redis.call('ZSCORE', seen, e.id) then
    flags[#flags + 1] = '0'
  else
    redis.call('ZADD', seen, now, e.id)
    apply(e)
    if not e.u then
      redis.call('LPUSH', log, ARGV[i + 1])
      logged = true
    end
    flags[#flags + 1] = '1'
    applied = true
  end
end

if applied then
  zcap(seen, cfg.dedupe_max)
  redis.call('EXPIRE', seen, cfg.dedupe_ttl)
  for _, key in ipairs({profile, channels, categories, purchased, orders, cart, consents}) do
    redis.call('EXPIRE', key, cfg.profile_ttl)
  end
  if logged then
    redis.call('LTRIM', log, 0, cfg.log_max - 1)
    redis.call('EXPIRE', log, cfg.profile_ttl)
  end
  local n = redis.call('ZCARD', sessions)
  if n > cfg.sessions then
    for _, sid in ipairs(redis.call('ZRANGE', sessions, 0, n - cfg.sessions - 1)) do
      local skey = session_prefix .. sid
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
    local skey = session_prefix .. sid
    for _, part in ipairs({'', ':products', ':categories', ':pages', ':searches'}) do
      redis.call('EXPIRE', skey .. part, cfg.session_ttl)
    end
  end
end
return table.concat(flags)
