-- Move retries whose time has come back into their batches. A retry for a target that is
-- not live now is dropped: no process would push it, and the catch-up that runs when the
-- target is back pushes every number whose confirmation there does not match the ledger.
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
return cjson.encode({moved = #due, staged = staged_summary(touched)})
