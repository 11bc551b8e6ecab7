-- Move retries whose time has come back into their batches.
-- ARGV: prefix, now_ms, max to move
local due = redis.call('ZRANGEBYSCORE', P .. 'retry', '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[3]))
local touched = {}
for _, member in ipairs(due) do
  redis.call('ZREM', P .. 'retry', member)
  local sep = string.find(member, '|', 1, true)
  restage(string.sub(member, 1, sep - 1), string.sub(member, sep + 1), true, touched)
end
return cjson.encode({moved = #due, staged = staged_summary(touched)})
