-- Move retries whose time has come back into their batches. A target that is not live
-- (not announced within its TTL) keeps no work: its retries, its batches (staged while it
-- was live, or by a push that completed since) and an unfinished catch-up are dropped (no
-- process would push them), and it leaves `targets:live` (is_live), so that the next
-- process to announce it starts a catch-up (register.lua) that stages every number whose
-- confirmation there does not match the ledger.
-- ARGV: prefix, now_ms, max to move
local due = redis.call('ZRANGEBYSCORE', P .. 'retry', '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[3]))
local touched = {}
local live = {}
for _, target in ipairs(redis.call('HKEYS', P .. 'targets')) do
  if is_live(target) then
    live[target] = true
  else
    redis.call('DEL', P .. 'stage:' .. target .. ':add', P .. 'stage:' .. target .. ':remove')
    redis.call('HDEL', P .. 'backfill', target)
  end
end
for _, member in ipairs(due) do
  local sep = string.find(member, '|', 1, true)
  local target = string.sub(member, 1, sep - 1)
  redis.call('ZREM', P .. 'retry', member)
  if live[target] then restage(target, string.sub(member, sep + 1), true, touched) end
end
return cjson.encode({count = #due, staged = staged_summary(touched)})
