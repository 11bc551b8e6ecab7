-- End a scheduled run's turn early (pipeline.on_schedule: it failed, and Celery retries it),
-- unless the turn ran out and another run took one since: that one stands.
-- ARGV: prefix, now_ms, task name, the run's token
local key = P .. 'turn:' .. ARGV[3]
if redis.call('GET', key) == ARGV[4] then return redis.call('DEL', key) end
return 0
