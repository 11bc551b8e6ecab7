-- A push's first look, in one round trip: its chunk, whether its provider is paused, and
-- each number's ledger state and version (a stale action is skipped, not sent).
-- ARGV: prefix, now_ms, chunk id
-- Answers {} when the chunk is gone (completed, or recovered), else
-- {chunk JSON, paused 0|1, state, version, state, version, ...} in the chunk's order.
local raw = redis.call('GET', P .. 'chunk:' .. ARGV[3])
if not raw then return {} end
local chunk = cjson.decode(raw)
local out = {raw, redis.call('HEXISTS', P .. 'paused', chunk.provider)}
for _, item in ipairs(chunk.items) do
  local led = redis.call('HMGET', P .. 'num:' .. item[1], 's', 'v')
  out[#out + 1] = led[1] or ''
  out[#out + 1] = led[2] or ''
end
return out
