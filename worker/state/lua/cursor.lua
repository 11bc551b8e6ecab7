-- Move a target's catch-up cursor on from the one a step read, unless it changed meanwhile:
-- the target lapsed and came back while the step worked, and register.lua started a fresh
-- catch-up that a step of the old one must neither overwrite nor delete.
-- ARGV: prefix, now_ms, target, cursor the step read, next cursor ('' = done)
local key = P .. 'backfill'
if redis.call('HGET', key, ARGV[3]) ~= ARGV[4] then return 0 end
if ARGV[5] == '' then
  redis.call('HDEL', key, ARGV[3])
else
  redis.call('HSET', key, ARGV[3], ARGV[5])
end
return 1
