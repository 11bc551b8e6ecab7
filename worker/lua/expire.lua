-- Lift temporary blocks whose time has come: the ledger says unblocked (by expiry) and every
-- target is staged to remove, except those whose provider expires blocks natively.
-- ARGV: prefix, now_ms, max to lift, audit cap
local due = redis.call('ZRANGEBYSCORE', P .. 'expiry', '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[3]))
local cap = tonumber(ARGV[4])
local targets = redis.call('HKEYS', P .. 'targets')
local touched = {}
local lifted = 0
for _, n in ipairs(due) do
  redis.call('ZREM', P .. 'expiry', n)
  local key = P .. 'num:' .. n
  local led = redis.call('HMGET', key, 's', 'v', 'x', 't')
  local x = tonumber(led[3] or '0')
  if led[1] == 'blocked' and x > 0 and x <= NOW then
    local v = tonumber(led[2]) + 1
    local t = math.max(tonumber(led[4] or '0'), x)
    redis.call('HSET', key, 's', 'unblocked', 'v', int(v), 'x', '0', 't', int(t),
      'e', 'expiry', 'u', int(NOW), 'xr', '1')
    redis.call('SREM', P .. 'blocked', n)
    audit(n, {at = NOW, ev = 'expiry', act = 'expire', res = 'applied', t = x, v = v}, cap)
    for _, target in ipairs(targets) do
      restage(target, n, true, touched)
    end
    lifted = lifted + 1
  end
end
return cjson.encode({lifted = lifted, staged = staged_summary(touched)})
