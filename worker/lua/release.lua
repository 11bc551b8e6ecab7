-- Give a chunk's numbers back to staging without counting an attempt (provider paused or
-- disabled), or after its lease ran out (a worker died mid-push).
-- ARGV: prefix, now_ms, chunk id, forget ('1': what the provider holds is unknown)
local id, forget = ARGV[3], ARGV[4] == '1'
local raw = redis.call('GET', P .. 'chunk:' .. id)
redis.call('ZREM', P .. 'leases', id)
if not raw then return cjson.encode({status = 'gone', staged = {}}) end
local chunk = cjson.decode(raw)
local touched = {}
for _, item in ipairs(chunk.items) do
  local n = item[1]
  if redis.call('HGET', P .. 'inflight:' .. chunk.target, n) == id then
    redis.call('HDEL', P .. 'inflight:' .. chunk.target, n)
  end
  if forget then redis.call('HDEL', P .. 'confirmed:' .. chunk.target, n) end
  restage(chunk.target, n, true, touched)
end
redis.call('DEL', P .. 'chunk:' .. id)
return cjson.encode({status = 'ok', count = #chunk.items, staged = staged_summary(touched)})
