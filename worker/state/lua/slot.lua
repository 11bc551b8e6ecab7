-- Request slots shared by every worker: a concurrency cap held as leases that expire (a
-- worker killed mid-request leaks nothing) and a requests-per-second cap over the last second.
-- An acquire also answers a Retry-After hold on the provider (see Store.hold), as a negative
-- number of ms left: one round trip per request instead of two.
-- An acquire for a push's request renews the chunk's lease first, as renew.lua does (the
-- same round trip), and answers nil when the chunk is gone: the request is not sent
-- (worker/pipeline/lease.py).
-- A slot is given back by a plain ZREM of its token (worker/state/keyspace.py:
-- give_back_slots), in a round trip of its own or in the push's next one.
-- ARGV: prefix, now_ms, provider, token, rps, concurrency, lease ms, the chunk to renew (''
--       for none), its lease ms
local provider, token = ARGV[3], ARGV[4]
local rps, cap, lease = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local slots = P .. 'slots:' .. provider
local rate = P .. 'rate:' .. provider
local chunk = ARGV[8] or ''
if chunk ~= '' then
  if redis.call('EXISTS', P .. 'chunk:' .. chunk) == 0 then return false end
  redis.call('ZADD', P .. 'leases', 'GT', NOW + tonumber(ARGV[9]), chunk)
end
local hold = tonumber(redis.call('GET', P .. 'hold:' .. provider) or '0')
if hold > NOW then
  return -(hold - NOW)
end
redis.call('ZREMRANGEBYSCORE', slots, '-inf', NOW)
redis.call('ZREMRANGEBYSCORE', rate, '-inf', NOW - 1000)
if cap > 0 and redis.call('ZCARD', slots) >= cap then
  local first = redis.call('ZRANGE', slots, 0, 0, 'WITHSCORES')
  return math.max(5, math.min(50, tonumber(first[2]) - NOW))
end
if rps > 0 and redis.call('ZCARD', rate) >= rps then
  local oldest = redis.call('ZRANGE', rate, 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + 1000 - NOW)
end
redis.call('ZADD', slots, NOW + lease, token)
redis.call('ZADD', rate, NOW, token)
redis.call('PEXPIRE', slots, lease + 1000)
redis.call('PEXPIRE', rate, 2000)
return 0
