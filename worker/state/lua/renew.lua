-- Extend a chunk's lease before another request; 0 if it was already recovered. A lease
-- only grows: a renewal computed a moment earlier (another thread of the same push) must
-- not cut short the one that landed first.
-- ARGV: prefix, now_ms, chunk id, lease ms
local id = ARGV[3]
if redis.call('EXISTS', P .. 'chunk:' .. id) == 0 then return 0 end
redis.call('ZADD', P .. 'leases', 'GT', NOW + tonumber(ARGV[4]), id)
return 1
