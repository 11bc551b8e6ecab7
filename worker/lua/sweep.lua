-- Move retries whose time has come back into their batches. For a target that is not live
-- now, retries, batches (staged while it was live, or by a push that completed since) and
-- an unfinished catch-up are dropped: no process would push them, and the catch-up that
-- starts when the target is back pushes every number whose confirmation there does not
-- match the ledger.
-- ARGV: prefix, now_ms, max to move
local due = redis.call('ZRANGEBYSCORE', P .. 'retry', '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[3]))
local touched = {}
local live = {}
for _, target in ipairs(live_targets()) do live[target] = true end
for _, member in ipairs(due) do
  redis.call('ZREM', P .. 'retry', member)
  local sep = string.find(member, '|', 1, true)
  local target = string.sub(member, 1, sep - 1)
  if live[target] then restage(target, string.sub(member, sep + 1), true, touched) end
end
for _, target in ipairs(redis.call('HKEYS', P .. 'targets')) do
  if not live[target] then
    redis.call('DEL', P .. 'stage:' .. target .. ':add', P .. 'stage:' .. target .. ':remove')
    -- A catch-up it had not finished starts again from the top when it is back
    -- (register.lua), so none is left pending for a target that may never come back.
    redis.call('HDEL', P .. 'backfill', target)
  end
end
return cjson.encode({moved = #due, staged = staged_summary(touched)})
