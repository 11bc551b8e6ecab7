-- Move retries whose time has come back into their batches. A target that has not been
-- announced for longer than its TTL and a grace (another TTL) is gone: its retries, its
-- batches (staged while it was live, or by a push that completed since) and an unfinished
-- catch-up are dropped (no process would push them), and it leaves `targets:live`, so
-- that the next process to announce it, whatever time it has, starts a catch-up
-- (register.lua) that pushes every number whose confirmation there does not match the
-- ledger. Every script reads the server's clock (prelude.lua); the grace is for a caller
-- that passes a time of its own, running ahead of the announcers' (it would drop the work
-- of a target they still announce). A retry of a target within the grace waits.
-- ARGV: prefix, now_ms, max to move, grace ms
local grace = tonumber(ARGV[4] or '0')
local due = redis.call('ZRANGEBYSCORE', P .. 'retry', '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[3]))
local touched = {}
local live, gone = {}, {}
for _, target in ipairs(redis.call('HKEYS', P .. 'targets')) do
  local until_ms = tonumber(redis.call('ZSCORE', P .. 'targets:live', target) or '0')
  if until_ms >= NOW then
    live[target] = true
  elseif until_ms < NOW - grace then
    gone[target] = true
    redis.call('DEL', P .. 'stage:' .. target .. ':add', P .. 'stage:' .. target .. ':remove')
    redis.call('HDEL', P .. 'backfill', target)
    redis.call('ZREM', P .. 'targets:live', target)
  end
end
for _, member in ipairs(due) do
  local sep = string.find(member, '|', 1, true)
  local target = string.sub(member, 1, sep - 1)
  if live[target] then
    redis.call('ZREM', P .. 'retry', member)
    restage(target, string.sub(member, sep + 1), true, touched)
  elseif gone[target] or redis.call('HEXISTS', P .. 'targets', target) == 0 then
    redis.call('ZREM', P .. 'retry', member)
  else
    redis.call('ZADD', P .. 'retry', int(NOW + grace), member)
  end
end
return cjson.encode({moved = #due, staged = staged_summary(touched)})
