-- Record a chunk's per-number results: confirm, schedule retries, dead-letter, re-stage.
-- ARGV: prefix, now_ms, chunk JSON (the pusher's own copy), results JSON
--       ({e164: [outcome, reason, detail, retry_after_ms, jitter 0..1, retry window ms]}),
--       max attempts,
--       audit cap, backoff base ms, backoff cap ms
local chunk = cjson.decode(ARGV[3])
local results = cjson.decode(ARGV[4])
local max_attempts = tonumber(ARGV[5])
local cap = tonumber(ARGV[6])
local base_ms, cap_ms = tonumber(ARGV[7]), tonumber(ARGV[8])
local target, action, id = chunk.target, chunk.action, chunk.id
local touched = {}
local counts = {done = 0, retry = 0, dead = 0, stale = 0, orphan = 0}

if redis.call('EXISTS', P .. 'chunk:' .. id) == 0 then
  -- The lease ran out and the chunk was recovered while we pushed: what the provider now
  -- holds is unknown (our late request may have landed after a newer one), so forget the
  -- confirmation and push the ledger's state again.
  for _, item in ipairs(chunk.items) do
    redis.call('HDEL', P .. 'confirmed:' .. target, item[1])
    restage(target, item[1], true, touched)
    counts.orphan = counts.orphan + 1
  end
  return cjson.encode({status = 'orphan', counts = counts, staged = staged_summary(touched)})
end

local function dead_letter(n, version, reason, detail, attempts)
  local member = target .. '|' .. n
  local raw = redis.call('HGET', P .. 'dlq', member)
  local entry
  if raw then entry = cjson.decode(raw) else
    entry = {id = member, target = target, provider = chunk.provider, phone = n,
             first_at = NOW, events = {}, replays = 0}
  end
  entry.action = action
  entry.reason = reason
  entry.last_error = detail
  entry.attempts = attempts
  entry.last_at = NOW
  entry.version = version
  local ev = redis.call('HGET', P .. 'num:' .. n, 'e')
  if ev then
    local known = false
    for _, e in ipairs(entry.events) do if e == ev then known = true end end
    if not known then table.insert(entry.events, ev) end
    while #entry.events > 20 do table.remove(entry.events, 1) end
  end
  redis.call('HSET', P .. 'dlq', member, cjson.encode(entry))
  redis.call('ZADD', P .. 'dlq:age', 'NX', entry.first_at, member)
  redis.call('HDEL', P .. 'attempts:' .. target, n)
  redis.call('HDEL', P .. 'firstfail:' .. target, n)
end

for _, item in ipairs(chunk.items) do
  local n, version = item[1], item[2]
  if redis.call('HGET', P .. 'inflight:' .. target, n) == id then
    redis.call('HDEL', P .. 'inflight:' .. target, n)
  end
  local r = results[n] or {'retry', 'no_result', 'the pusher reported nothing', 0, 0.5}
  local outcome, reason, detail = r[1], r[2], r[3]
  local attempts = 0
  local member = target .. '|' .. n
  if outcome == 'done' then
    redis.call('HSET', P .. 'confirmed:' .. target, n, want_state(action) .. ':' .. version)
    redis.call('HDEL', P .. 'attempts:' .. target, n)
    redis.call('HDEL', P .. 'firstfail:' .. target, n)
    if redis.call('HDEL', P .. 'dlq', member) == 1 then
      redis.call('ZREM', P .. 'dlq:age', member)  -- written and removed together
    end
    counts.done = counts.done + 1
  elseif outcome == 'retry' then
    attempts = redis.call('HINCRBY', P .. 'attempts:' .. target, n, 1)
    local window = tonumber(r[6] or 0)
    local give_up = attempts >= max_attempts
    if window > 0 then
      -- Retried for a while rather than a number of times (a record not written yet).
      local first = tonumber(redis.call('HGET', P .. 'firstfail:' .. target, n) or '0')
      if first == 0 then
        first = NOW
        redis.call('HSET', P .. 'firstfail:' .. target, n, int(NOW))
      end
      give_up = NOW - first >= window
    end
    if give_up then
      local why = 'max_attempts'
      if window > 0 then why = reason end
      dead_letter(n, version, why, reason .. ': ' .. detail, attempts)
      outcome = 'dead'
      counts.dead = counts.dead + 1
    else
      -- Exponential backoff with jitter, capped; a provider's Retry-After is a floor.
      local delay = math.min(cap_ms, base_ms * (2 ^ (attempts - 1))) * (0.5 + r[5] / 2)
      delay = math.max(delay, tonumber(r[4]))
      redis.call('ZADD', P .. 'retry', int(NOW + delay), member)
      counts.retry = counts.retry + 1
    end
  elseif outcome == 'permanent' then
    attempts = redis.call('HINCRBY', P .. 'attempts:' .. target, n, 1)
    dead_letter(n, version, reason, detail, attempts)
    outcome = 'dead'
    counts.dead = counts.dead + 1
  else
    counts.stale = counts.stale + 1
  end
  if outcome ~= 'stale' then
    local answer = cjson.encode({at = NOW, act = action, out = outcome, rsn = reason,
                                 det = detail, v = tonumber(version), n = attempts})
    redis.call('HSET', P .. 'answer:' .. target, n, answer)
    -- The audit entry is the answer plus the target: spliced, not encoded a second time.
    audit_raw(n, '{"prov":' .. cjson.encode(target) .. ',' .. string.sub(answer, 2), cap)
  end
  -- The ledger moved while this push was in flight: the number's newest state goes out next,
  -- so an old action is never the last word at the provider.
  local now_v = redis.call('HGET', P .. 'num:' .. n, 'v')
  if outcome == 'stale' or now_v ~= version then
    restage(target, n, true, touched)
  end
end

redis.call('DEL', P .. 'chunk:' .. id)
redis.call('ZREM', P .. 'leases', id)
return cjson.encode({status = 'ok', counts = counts, staged = staged_summary(touched)})
