-- A request slot shared by every worker (prelude.lua: take_slot).
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
local chunk = ARGV[8] or ''
if chunk ~= '' then
  if redis.call('EXISTS', P .. 'chunk:' .. chunk) == 0 then return false end
  redis.call('ZADD', P .. 'leases', 'GT', NOW + tonumber(ARGV[9]), chunk)
end
local hold = tonumber(redis.call('GET', P .. 'hold:' .. provider) or '0')
if hold > NOW then
  return -(hold - NOW)
end
return take_slot(provider, token, rps, cap, lease)
