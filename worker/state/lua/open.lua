-- A push's first look, in one round trip: its chunk, whether its provider is stopped
-- (paused, or held by a Retry-After or an open circuit), and each number's state for the
-- chunk's target (the ledger's, a block routed elsewhere only unblocked: see target_state)
-- and version (a stale action is skipped, not sent). The lease starts again here: the time
-- the chunk waited in the queue is not the push's. Each opening is counted: a task delivered
-- twice pushes the chunk twice at once, and the one that completes second is like a
-- recovered chunk's late pusher (release.lua, complete.lua).
-- ARGV: prefix, now_ms, chunk id, lease ms
-- Answers {chunk = false} when the chunk is gone (completed, or recovered), else {chunk =
-- its JSON, stopped = true|false, states = {e164: state}, versions = {e164: version}}
-- (records.py: OpenChunk); a number an add-only target holds already (its push answered
-- while this chunk waited) has state 'held': it is not sent again.
local id = ARGV[3]
local raw = redis.call('GET', P .. 'chunk:' .. id)
if not raw then return cjson.encode({chunk = false}) end
redis.call('ZADD', P .. 'leases', 'GT', NOW + tonumber(ARGV[4]), id)
redis.call('HINCRBY', P .. 'opened', id, 1)
local chunk = cjson.decode(raw)
local stopped = redis.call('HEXISTS', P .. 'paused', chunk.provider) == 1
if tonumber(redis.call('GET', P .. 'hold:' .. chunk.provider) or '0') > NOW then stopped = true end
local states, versions = {}, {}
local add_only = meta(chunk.target).add_only
for _, item in ipairs(chunk.items) do
  local n = item[ITEM.e164]
  local led = redis.call('HMGET', P .. 'num:' .. n, 's', 'v', 'rs', 'src')
  local state = target_state(chunk.target, led[1] or '', led[3] or led[4])
  if add_only then
    local conf = confirmed(chunk.target, n)
    if conf and string.sub(conf, 1, 8) == 'blocked:' then state = 'held' end
  end
  states[n] = state
  versions[n] = led[2] or ''
end
return cjson.encode({chunk = raw, stopped = stopped, states = states, versions = versions})
