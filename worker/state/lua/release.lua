-- Give a chunk's numbers back to staging without counting an attempt: 'return' when its
-- pusher hands it back unsent (provider paused or not enabled here), 'recover' when its
-- lease ran out (a worker died or stalled mid-push). Recovery re-checks, in this script,
-- that the lease has still run out: a push may have renewed it since it was listed. What
-- the provider holds for a recovered chunk's numbers is unknown, so each is pushed again;
-- and a request of its pusher, if that one still lives, may land for a while yet, after
-- newer pushes, with no answer that ever tells (its pusher may die first): until then
-- (`late:{target}`), a newer push's confirmation waits for one more push (complete.lua).
-- A chunk handed back by one push while another delivery of its task pushes it too is
-- treated as recovered.
-- ARGV: prefix, now_ms, chunk id, mode ('return' | 'recover'), late ms
-- Answers {status = 'ok' | 'gone' | 'alive', staged} (records.py: Released).
local id, recovering = ARGV[3], ARGV[4] == 'recover'
local late_ms = tonumber(ARGV[5])
local raw = redis.call('GET', P .. 'chunk:' .. id)
if not raw then
  redis.call('ZREM', P .. 'leases', id)
  return cjson.encode({status = 'gone', staged = {}})
end
if recovering then
  local lease = redis.call('ZSCORE', P .. 'leases', id)
  if lease and tonumber(lease) > NOW then
    return cjson.encode({status = 'alive', staged = {}})
  end
end
redis.call('ZREM', P .. 'leases', id)
if opened_twice(id) then recovering = true end
local chunk = cjson.decode(raw)
local target = chunk.target
local add_only = meta(target).add_only
local touched = {}
for _, item in ipairs(chunk.items) do
  local n = item[ITEM.e164]
  if redis.call('HGET', P .. 'inflight:' .. target, n) == id then
    redis.call('HDEL', P .. 'inflight:' .. target, n)
  end
  local conf = confirmed(target, n)
  -- An add-only target's confirmation stands: it never loses a number.
  if recovering and not (add_only and conf and string.sub(conf, 1, 8) == 'blocked:') then
    confirm(target, n, UNKNOWN)
  end
  -- Its answer was not going to count (complete.lua); there will be none now.
  take_mark(target, n, id)
  if recovering then
    if chunk.action == 'remove' then note_remove(target, n) end
    unsettle_siblings(target, n, touched, NOW + late_ms)
    if not add_only then may_land_until('late:' .. target, n, NOW + late_ms) end
  end
  restage(target, n, true, touched)
end
redis.call('DEL', P .. 'chunk:' .. id)
redis.call('HDEL', P .. 'opened', id)
return cjson.encode({status = 'ok', staged = staged_summary(touched)})
