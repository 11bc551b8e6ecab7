-- Extend a chunk's lease before another request; 0 if it was already recovered.
-- ARGV: prefix, now_ms, chunk id, lease ms
local id = ARGV[3]
if redis.call('EXISTS', P .. 'chunk:' .. id) == 0 then return 0 end
redis.call('ZADD', P .. 'leases', NOW + tonumber(ARGV[4]), id)
return 1
