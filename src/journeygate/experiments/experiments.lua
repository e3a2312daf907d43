-- Experiment records of one visitor (one hash slot): KEYS[1] = jg:{v}:xp (hash),
-- KEYS[2] = jg:{v}:xp:recent (list of the capped fields of KEYS[1], newest first).
--
-- Fields of jg:{v}:xp:
--   x:EXP  JSON {"arms": {ARM: [first exposure, last exposure, converted 0/1, revenue]},
--               "last": [decision id, arm]}              (one per experiment: bounded)
--   d:DID  JSON {SLOT: [EXP, ARM, clicked 0/1, converted 0/1]}   (capped, see below)
--   o:OID  1: an order already attributed                          (capped)
-- d: and o: fields are listed in KEYS[2]; past ARGV cap entries the oldest are removed.
--
-- ARGV[1] = 'expose': EXP ARM DID SLOT NOW TTL CAP -> 1 when the visitor is new to the arm.
-- ARGV[1] = 'click':  DID SLOT TTL CAP -> {EXP, ARM, first click of that decision} ...
-- ARGV[1] = 'order':  DID AT REVENUE OID WINDOW SKEW TTL CAP EXP... -> for each experiment
--   the order counts for: {EXP, ARM, new converter, revenue, delta of revenue squared,
--   first conversion of the decision it is credited to} ...
local h, recent = KEYS[1], KEYS[2]
local op = ARGV[1]

local function remember(name, cap)
  redis.call('LPUSH', recent, name)
  while redis.call('LLEN', recent) > cap do
    redis.call('HDEL', h, redis.call('RPOP', recent))
  end
end

local function load(name)
  local raw = redis.call('HGET', h, name)
  return raw and cjson.decode(raw)
end

local function keep(ttl)
  redis.call('EXPIRE', h, ttl)
  redis.call('EXPIRE', recent, ttl)
end

local function num(x)
  return string.format('%.17g', x)
end

if op == 'expose' then
  local exp, arm, did, slot, now = ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
  local ttl, cap = tonumber(ARGV[7]), tonumber(ARGV[8])
  local state = load('x:' .. exp) or {arms = {}}
  local record = state.arms[arm]
  local new = 0
  if record then
    record[2] = math.max(record[2], now)
  else
    record = {now, now, 0, 0}
    new = 1
  end
  state.arms[arm] = record
  state.last = {did, arm}
  redis.call('HSET', h, 'x:' .. exp, cjson.encode(state))
  local decision = load('d:' .. did)
  if not decision then
    decision = {}
    remember('d:' .. did, cap)
  end
  if not decision[slot] then
    decision[slot] = {exp, arm, 0, 0}
  end
  redis.call('HSET', h, 'd:' .. did, cjson.encode(decision))
  keep(ttl)
  return new
end

local out = {}
if op == 'click' then
  local did, slot, ttl = ARGV[2], ARGV[3], tonumber(ARGV[4])
  local decision = load('d:' .. did)
  if not decision then
    return out
  end
  for s, record in pairs(decision) do
    if slot == '' or s == slot then
      table.insert(out, record[1])
      table.insert(out, record[2])
      table.insert(out, record[3] == 0 and 1 or 0)
      record[3] = 1
    end
  end
  if #out > 0 then
    redis.call('HSET', h, 'd:' .. did, cjson.encode(decision))
    keep(ttl)
  end
  return out
end

-- order
local did, at, revenue, oid = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local window, skew, ttl, cap = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]),
  tonumber(ARGV[9])
if oid ~= '' then
  if redis.call('HEXISTS', h, 'o:' .. oid) == 1 then
    return out
  end
end
local credited = {}
if did ~= '' then
  for _, record in pairs(load('d:' .. did) or {}) do
    credited[record[1]] = {did, record[2]}
  end
end
for i = 10, #ARGV do
  local exp = ARGV[i]
  local state = load('x:' .. exp)
  if state then
    local pick = credited[exp] or state.last
    local record = pick and state.arms[pick[2]]
    if record and at >= record[1] - skew and at <= record[2] + window then
      local new = record[3] == 0 and 1 or 0
      local before = record[4]
      record[3] = 1
      record[4] = before + revenue
      redis.call('HSET', h, 'x:' .. exp, cjson.encode(state))
      local first = 0
      local decision = load('d:' .. pick[1])
      if decision then
        for _, entry in pairs(decision) do
          if entry[1] == exp and entry[4] == 0 then
            entry[4] = 1
            first = 1
          end
        end
        redis.call('HSET', h, 'd:' .. pick[1], cjson.encode(decision))
      end
      for _, value in ipairs({exp, pick[2], new, num(revenue),
                              num(record[4] * record[4] - before * before), first}) do
        table.insert(out, value)
      end
    end
  end
end
if #out > 0 then
  if oid ~= '' then
    redis.call('HSET', h, 'o:' .. oid, 1)
    remember('o:' .. oid, cap)
  end
  keep(ttl)
end
return out
