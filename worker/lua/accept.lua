-- Accept one event in one round trip: idempotency, ledger (last-writer-wins), audit, staging.
-- ARGV: prefix, now_ms, event JSON, idempotency TTL seconds, audit cap, targets JSON,
--       numbers JSON ([[e164, name], ...]), idempotency mode: 'once' (check and record),
--       'check' (first part of a large event), 'none' (middle parts), 'record' (last part)
local ev = cjson.decode(ARGV[3])
local idem_ttl = tonumber(ARGV[4])
local cap = tonumber(ARGV[5])
local targets = cjson.decode(ARGV[6])
local numbers = cjson.decode(ARGV[7])
local mode = ARGV[8] or 'once'

local idem_key = P .. 'idem:' .. ev.source .. ':' .. ev.key
local seen = false
if mode == 'once' or mode == 'check' then seen = redis.call('GET', idem_key) end
if seen then
  local sep = string.find(seen, '|', 1, true)
  local hash = string.sub(seen, 1, sep - 1)
  local first_id = string.sub(seen, sep + 1)
  if hash == ev.hash then
    return cjson.encode({status = 'duplicate', event_id = first_id})
  end
  return cjson.encode({status = 'conflict', event_id = first_id})
end
-- A large event is written in parts; its key is recorded with the last part only, so a
-- retry after a crash between parts redoes them all (each part is idempotent by itself).
if mode == 'once' or mode == 'record' then
  redis.call('SET', idem_key, ev.hash .. '|' .. ev.id, 'EX', idem_ttl)
end

local t = tonumber(ev.t)
local x = tonumber(ev.x)
local touched = {}
local results = {}

for _, pair in ipairs(numbers) do
  local n = pair[1]
  local name = pair[2]
  local key = P .. 'num:' .. n
  local cur = redis.call('HMGET', key, 's', 'v', 't', 'x')
  local result
  local state, v, ct, cx = cur[1], tonumber(cur[2] or '0'), tonumber(cur[3] or '0'), tonumber(cur[4] or '0')
  local fields = nil
  if not state then
    if ev.action == 'add' then
      fields = {'s', 'blocked', 'x', int(x)}
    else
      fields = {'s', 'unblocked', 'x', '0'}
    end
    result = 'applied'
    ct = t
  elseif ev.action == 'add' then
    if state == 'blocked' then
      -- Blocks merge to the longest expiry (0 = permanent), whatever order they arrive in;
      -- only a remove lifts a block.
      local nx = cx
      if cx == 0 or x == 0 then nx = 0 elseif x > cx then nx = x end
      if nx ~= cx then
        fields = {'s', 'blocked', 'x', int(nx)}
        result = 'extended'
      else
        result = 'unchanged'
      end
      if t > ct then ct = t end
    elseif t >= ct then
      fields = {'s', 'blocked', 'x', int(x)}
      result = 'applied'
      ct = t
    else
      result = 'stale'
    end
  else
    if state == 'unblocked' then
      result = 'unchanged'
      if t > ct then ct = t end
    elseif t > ct then
      fields = {'s', 'unblocked', 'x', '0'}
      result = 'applied'
      ct = t
    else
      -- On a tie the add wins: a remove must be strictly newer than the block it lifts.
      result = 'stale'
    end
  end
  if fields then
    v = v + 1
    redis.call('HSET', key, 'v', int(v), 'e', ev.id, 'src', ev.source, 'u', int(NOW),
      'r', ev.reason or '', unpack(fields))
    if name and name ~= '' then redis.call('HSET', key, 'n', name) end
    if fields[2] == 'blocked' then
      redis.call('SADD', P .. 'blocked', n)
    else
      redis.call('SREM', P .. 'blocked', n)
    end
    -- A temporary block waits in `expiry` for the sweep that lifts it.
    if fields[2] == 'blocked' and tonumber(fields[4]) > 0 then
      redis.call('ZADD', P .. 'expiry', tonumber(fields[4]), n)
    else
      redis.call('ZREM', P .. 'expiry', n)
    end
    redis.call('HDEL', key, 'xr')
  end
  redis.call('HSET', key, 't', int(ct))
  if ev.cctx and ev.action == 'add' then
    -- The call this opt-out came from: call-record providers (Weya) need it to add.
    redis.call('HSET', key, 'c', ev.cctx)
  end
  audit(n, {at = NOW, ev = ev.id, src = ev.source, act = ev.action, res = result,
            rsn = ev.reason, t = t, x = x, ctx = ev.ctx, v = v, na = ev.na}, cap)
  for _, target in ipairs(targets) do
    restage(target, n, fields ~= nil, touched)
  end
  table.insert(results, result)
end

return cjson.encode({status = 'ok', event_id = ev.id, results = results,
                     staged = staged_summary(touched)})
