-- Forget batches of audit entries (`audit:batches`, prelude.lua: audit_flush) the archive has
-- committed, every row of each: they leave the stream, and `audit:rows` (the backlog's
-- count) drops by their rows. One already gone (a drain that ran twice) is skipped.
-- ARGV: prefix, now_ms, batches JSON ([stream id, rows], ...)
-- Answers how many rows left.
local log, rows = P .. 'audit:batches', P .. 'audit:rows'
local removed = 0
for _, batch in ipairs(cjson.decode(ARGV[3])) do
  if redis.call('XDEL', log, batch[1]) == 1 then removed = removed + batch[2] end
end
-- The count follows the stream: nothing waits when it is empty, and it never goes below
-- zero (a count lost with a failover's last writes would otherwise be off for good).
if redis.call('XLEN', log) == 0 or redis.call('DECRBY', rows, removed) < 0 then
  redis.call('SET', rows, 0)
end
return removed
