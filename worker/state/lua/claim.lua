-- Claim staged numbers of one target|action as leased chunks ready to push.
-- ARGV: prefix, now_ms, target, provider, action, max per chunk, lease ms, mode, linger ms,
--       max chunks, max in flight (chunks' worth of numbers in flight to the target; 0: any),
--       open ('1': open the first chunk claimed, as open.lua does: a push chain takes its
--       next chunk in one round trip, not two), slot terms for its opening (open.lua)
-- Answers {status, chunks = [id, ...], staged, opened = open.lua's answer for the first
-- chunk, when asked and one was claimed} (records.py: Claimed).
-- mode: 'full' takes only full chunks, 'all' takes everything, 'due' takes everything once
-- the oldest staged number has waited the linger time.
-- With the target at its in-flight cap nothing is claimed: the pushes in flight go on to
-- the next chunks themselves (worker/pipeline/push.py), one broker message per chain
-- instead of a push task per chunk, and a backlog waits staged, not leased.
local target, provider, action = ARGV[3], ARGV[4], ARGV[5]
local size, lease, mode = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
local linger, max_chunks = tonumber(ARGV[9]), tonumber(ARGV[10])
local max_inflight = tonumber(ARGV[11] or '0')
local open_first = ARGV[12] == '1'
local slot = open_first and slot_terms(ARGV[13]) or nil
local inflight_key = P .. 'inflight:' .. target

-- A target no process has announced within its TTL gets no pushes: the sweep drops what it
-- had staged and it catches up from the ledger when it comes back (register.lua).
if not is_live(target) then
  return cjson.encode({status = 'inactive', chunks = {}})
end
if redis.call('HEXISTS', P .. 'paused', provider) == 1 then
  return cjson.encode({status = 'paused', chunks = {}})
end
local hold = redis.call('GET', P .. 'hold:' .. provider)
if hold and tonumber(hold) > NOW then
  return cjson.encode({status = 'held', chunks = {}})
end
-- A circuit that opened and has not closed since (complete.lua): its hold has passed, and
-- one chunk at a time probes whether the provider answers again.
if redis.call('HEXISTS', P .. 'breaker:' .. provider, 'opens') == 1 then
  if redis.call('HLEN', inflight_key) > 0 then
    return cjson.encode({status = 'probing', chunks = {}})
  end
  max_chunks = 1
end

local key = P .. 'stage:' .. target .. ':' .. action
if mode == 'due' then
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if #oldest == 0 or tonumber(oldest[2]) + linger > NOW then
    return cjson.encode({status = 'ok', chunks = {}})
  end
end

local want = want_state(action)
local chunks = {}
local touched = {}
-- The first chunk's states and versions as read here, when it is to be opened (open_chunk).
local first = nil
while #chunks < max_chunks do
  if max_inflight > 0 and redis.call('HLEN', inflight_key) >= max_inflight * size then break end
  local count = redis.call('ZCARD', key)
  if count == 0 or (mode == 'full' and count < size) then break end
  local members = redis.call('ZRANGE', key, 0, size - 1)
  redis.call('ZREM', key, unpack(members))
  local id = int(redis.call('INCR', P .. 'chunkseq'))
  local items = {}
  local known = nil
  if open_first and #chunks == 0 then known = {states = {}, versions = {}} end
  for _, n in ipairs(members) do
    local led = redis.call('HMGET', P .. 'num:' .. n, 's', 'v', 'n', 'x', 'c', 'src', 'r', 'u',
                           'rs')
    local state = target_state(target, led[1], led[9] or led[6])
    if state == want then
      if known then known.states[n], known.versions[n] = state, led[2] or '' end
      redis.call('HSET', inflight_key, n, id)
      table.insert(items, chunk_item(n, led[2], led[3] or '', led[4] or '0', led[5] or '',
                                     led[6] or '', led[7] or '', led[8] or '0'))
    else
      -- The ledger moved after staging (or its block is routed elsewhere only) and nothing
      -- re-staged it: stage what it says now.
      restage(target, n, true, touched)
    end
  end
  if #items > 0 then
    local chunk = {id = id, target = target, provider = provider, action = action,
                   items = items, created = NOW}
    local raw = cjson.encode(chunk)
    redis.call('SET', P .. 'chunk:' .. id, raw)
    redis.call('ZADD', P .. 'leases', NOW + lease, id)
    table.insert(chunks, id)
    if known then
      known.raw, known.chunk = raw, chunk
      first = known
    end
  end
end
local answer = {status = 'ok', chunks = chunks, staged = staged_summary(touched)}
if open_first and chunks[1] then answer.opened = open_chunk(chunks[1], lease, first, slot) end
return cjson.encode(answer)
