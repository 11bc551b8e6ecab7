-- Keep an input for a person to review, newest first, capped: the cases the cap pushes out
-- are answered (and counted as `overflowed`) so they are logged, never dropped silently.
-- One script, so that a WAIT for replicas can follow it on the connection that wrote it.
-- ARGV: prefix, now_ms, source, the case's JSON, how many cases to keep
local source, raw, keep = ARGV[3], ARGV[4], tonumber(ARGV[5])
local key = P .. 'review:' .. source
redis.call('LPUSH', key, raw)
local pushed_out = redis.call('LRANGE', key, keep, -1)
if #pushed_out > 0 then
  redis.call('LTRIM', key, 0, keep - 1)
  redis.call('HINCRBY', P .. 'counts:review:' .. source, 'overflowed', #pushed_out)
end
redis.call('SADD', P .. 'reviews', source)
return pushed_out
