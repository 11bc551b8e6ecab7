-- Record a chunk's per-number results: confirm, schedule retries, dead-letter, re-stage;
-- and what the chunk says about its provider (a Retry-After hold, the circuit breaker).
-- ARGV: prefix, now_ms, chunk JSON (the pusher's own copy), results JSON
--       ({e164: {outcome, reason, detail, retry_after_ms, jitter (0..1), window_ms (retry
--       window), may_land (not done, and the provider may still carry it out later)}}: see
--       worker/state/records.py: ItemResult), options JSON (records.py: CompleteOptions)
-- Answers {status = 'ok' | 'orphan', counts = {outcome: n}, staged, circuit, now} (Completion).
-- Outcomes: done; retry (the number's own failure: an attempt is spent); outage (its
-- request failed as a whole: no attempt is spent, but a number failing so for longer than
-- the budget is dead-lettered); permanent; stale (not sent: the ledger moved); unsent (not
-- sent: the provider was paused or the lease lost while the chunk was pushed).
local chunk = cjson.decode(ARGV[3])
local results = cjson.decode(ARGV[4])
local opt = cjson.decode(ARGV[5])
local target, action, id = chunk.target, chunk.action, chunk.id
local touched = {}
local counts = {done = 0, retry = 0, dead = 0, stale = 0, orphan = 0, outage = 0, unsent = 0}
local unknown_key = P .. 'unknown:' .. target
local inflight_key = P .. 'inflight:' .. target
local add_only = meta(target).add_only

local function sent(r)
  return r ~= nil and r.outcome ~= 'stale' and r.outcome ~= 'unsent'
end

local function held_for_good(n)
  if not add_only then return false end
  local conf = confirmed(target, n)
  return conf ~= false and conf ~= nil and string.sub(conf, 1, 8) == 'blocked:'
end

if redis.call('EXISTS', P .. 'chunk:' .. id) == 0 then
  -- The lease ran out and the chunk was recovered while we pushed. Our requests may have
  -- landed after a newer push for the same numbers, so what the provider holds for each
  -- number we sent is unknown: it is pushed again with the ledger's state once nothing else
  -- is in flight for it. The push in flight now, if any, may have been overtaken by ours:
  -- its answer will not count as a confirmation either (see below).
  for _, item in ipairs(chunk.items) do
    local n = item[ITEM.e164]
    local r = results[n]
    take_mark(target, n, id)
    if sent(r) then
      if add_only and (r.outcome == 'done' or held_for_good(n)) then
        -- Nothing is ever removed there: done is done (and each add may email someone),
        -- and a block confirmed meanwhile stands whatever this late answer says.
        if r.outcome == 'done' then
          confirm(target, n, 'blocked:' .. item[ITEM.version])
        end
      else
        confirm(target, n, UNKNOWN)
        local owner = redis.call('HGET', inflight_key, n)
        if owner and owner ~= id then redis.call('HSET', unknown_key, n, owner) end
      end
      local from = r.outcome == 'done' and r.reason == 'moved'
        and string.match(r.detail, '^from (.+)$')
      if from then
        took_from(target, n, from, opt.moved_retry_ms, touched)
      elseif action == 'remove' or r.outcome ~= 'done' then
        unsettle_siblings(target, n, touched)
      end
      if action == 'remove' then note_remove(target, n) end
      restage(target, n, true, touched)
      counts.orphan = counts.orphan + 1
    end
  end
  return cjson.encode({status = 'orphan', counts = counts, staged = staged_summary(touched),
                       now = NOW})
end

-- A number's failures count for the version of its ledger state that failed: a newer state
-- starts afresh, so neither an attempt count nor a failure clock of a superseded action
-- carries over to the next one (a remove would be dead-lettered for its add's failures).
-- (Keys of their own, not the `attempts:`/`firstfail:` of before: during a rolling upgrade
-- the old scripts must never meet these values.)
local function forget_failures(n)
  redis.call('HDEL', P .. 'fails:' .. target, n)
  redis.call('HDEL', P .. 'outage:' .. target, n)
  redis.call('HDEL', P .. 'window:' .. target, n)
end

-- Failed attempts at this version, plus `add`: `fails:{target}` holds "{version}:{count}".
local function attempts_of(n, version, add)
  local key = P .. 'fails:' .. target
  local count = 0
  local v, c = string.match(redis.call('HGET', key, n) or '', '^([^:]+):(%d+)$')
  if v == version then count = tonumber(c) end
  if add > 0 then
    count = count + add
    redis.call('HSET', key, n, version .. ':' .. int(count))
  end
  return count
end

-- When this number's current streak of outages began (for the outage budget):
-- `outage:{target}` holds "{version}:{first}:{last}". A streak ends with a newer version,
-- and after a quiet gap longer than any wait the pipeline schedules for a number that keeps
-- failing (its provider was paused, its target away): a blip after that is not a day-long
-- outage.
local QUIET_MS = math.max(opt.outage_budget_ms / 4,
                          4 * math.max(opt.backoff_cap_ms, opt.breaker_cap_ms))
local function outage_since(n, version)
  local key = P .. 'outage:' .. target
  local v, first, last = string.match(redis.call('HGET', key, n) or '', '^([^:]+):(%d+):(%d+)$')
  if v ~= version or NOW - tonumber(last) > QUIET_MS then first = NOW end
  redis.call('HSET', key, n, version .. ':' .. int(first) .. ':' .. int(NOW))
  return tonumber(first)
end

-- How long this number has been getting an answer that a window bounds (Weya's 404 while
-- a call record is being written): `window:{target}` holds "{version}:{spent}:{last}". Only
-- the time between two such answers counts (`counting`), and not a gap longer than twice
-- the backoff cap (the provider was paused or away meanwhile); an outage only moves `last`
-- to its own time: time the provider was down is no time spent waiting for it.
local function window_spent(n, version, counting)
  local key = P .. 'window:' .. target
  local v, spent, last = string.match(redis.call('HGET', key, n) or '', '^([^:]+):(%d+):(%d+)$')
  if v ~= version then
    if not counting then return 0 end
    spent = 0
  else
    spent = tonumber(spent)
    if counting and NOW - tonumber(last) <= 2 * opt.backoff_cap_ms then
      spent = spent + (NOW - tonumber(last))
    end
  end
  redis.call('HSET', key, n, version .. ':' .. int(spent) .. ':' .. int(NOW))
  return spent
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
  forget_failures(n)
end

-- Until when a late request for the number may still land (see may_land_until): false
-- when none can land after this chunk's own requests, which were sent after it was leased.
local function late_in(key, n)
  local raw = redis.call('HGET', P .. key, n)
  if not raw then return false end
  if tonumber(raw) < chunk.created then
    if late_mark_spent(key, n, tonumber(raw)) then redis.call('HDEL', P .. key, n) end
    return false
  end
  return tonumber(raw)
end

-- Our own target's late requests can undo either action; another Daktela target's only an
-- add (a remove wants the entry gone, whoever takes or deletes it).
local function late_until(n)
  local own = late_in('late:' .. target, n)
  local sibling = meta(target).one_list and late_in('latesib:' .. chunk.provider, n)
  if action ~= 'add' then sibling = false end
  if own and sibling then return math.max(own, sibling) end
  return own or sibling
end

-- Another delivery of this push's task pushed the chunk too, and may still be sending: its
-- requests are late ones from now on.
local twice = opened_twice(id) and not add_only

local answered, outages, last_outage = 0, 0, ''
for _, item in ipairs(chunk.items) do
  local n, version = item[ITEM.e164], item[ITEM.version]
  if twice then
    may_land_until('late:' .. target, n, NOW + opt.late_ms)
    unsettle_siblings(target, n, touched, NOW + opt.late_ms)
  end
  if redis.call('HGET', inflight_key, n) == id then
    redis.call('HDEL', inflight_key, n)
  end
  -- A recovered chunk's late request may have reached the provider after ours: our answer
  -- is no confirmation (see the orphan branch above).
  local mark, mover = take_mark(target, n, id)
  local overtaken = mark ~= false
  local unsure = false  -- confirmed by one more push
  local late = false  -- confirmed by one more push once no late request can land
  -- A number the pusher reported nothing of may have been sent: its request may still land.
  local r = results[n] or {outcome = 'retry', reason = 'no_result',
                           detail = 'the pusher reported nothing', retry_after_ms = 0,
                           jitter = 0.5, window_ms = 0, may_land = true}
  local outcome, reason, detail = r.outcome, r.reason, r.detail
  -- A request the provider may still carry out later, after the next push (a timeout, a
  -- gateway's 5xx, an answer nobody expected): the number's next push is confirmed by one
  -- more once it no longer can (an add-only target has nothing to undo).
  local lost = sent(r) and r.may_land == true and not add_only
  if lost then may_land_until('late:' .. target, n, NOW + opt.late_ms) end
  local attempts = 0
  local member = target .. '|' .. n
  if outcome == 'done' then
    confirm(target, n, want_state(action) .. ':' .. version)
    local from = reason == 'moved' and string.match(detail, '^from (.+)$')
    if from and took_from(target, n, from, opt.moved_retry_ms, touched) then
      -- A remove there may have looked the entry up before we took it and deleted it
      -- after: if one answered (or was given up on) about the time this chunk was leased
      -- or since (a margin for a late delete and for the clocks of other hosts), ours is
      -- confirmed by one more push, which finds the entry here or puts it back. (One still
      -- in flight is marked by took_from: its answer unsettles ours.)
      -- Once per remove noted: two live targets taking the entry from each other would
      -- otherwise push at once, again and again, until the margin ran out.
      local key = P .. 'num:' .. n
      local ol = redis.call('HGET', key, 'ol')
      unsure = ol ~= false and tonumber(ol) + opt.late_ms >= chunk.created
        and redis.call('HGET', key, 'rc:' .. target) ~= ol
      if unsure then redis.call('HSET', key, 'rc:' .. target, ol) end
    end
    late = late_until(n)
    forget_failures(n)
    if redis.call('HDEL', P .. 'dlq', member) == 1 then
      redis.call('ZREM', P .. 'dlq:age', member)  -- written and removed together
    end
    counts.done = counts.done + 1
  elseif outcome == 'retry' then
    attempts = attempts_of(n, version, 1)
    local window = tonumber(r.window_ms or 0)
    local give_up = attempts >= opt.max_attempts
    if window > 0 then
      -- Retried for a while rather than a number of times (a record not written yet).
      give_up = window_spent(n, version, true) >= window
    end
    if give_up then
      local why = 'max_attempts'
      if window > 0 then why = reason end
      dead_letter(n, version, why, reason .. ': ' .. detail, attempts)
      outcome = 'dead'
      counts.dead = counts.dead + 1
    else
      -- Exponential backoff with jitter, capped; a provider's Retry-After is a floor.
      local delay = math.min(opt.backoff_cap_ms, opt.backoff_base_ms * (2 ^ (attempts - 1)))
      delay = math.max(delay * (0.5 + r.jitter / 2), tonumber(r.retry_after_ms))
      redis.call('ZADD', P .. 'retry', int(NOW + delay), member)
      counts.retry = counts.retry + 1
    end
  elseif outcome == 'outage' then
    -- The request failed as a whole: nothing is known about this number, so no attempt is
    -- spent; the circuit breaker keeps a provider that is down from being hammered.
    attempts = attempts_of(n, version, 0)
    window_spent(n, version, false)
    local failing = NOW - outage_since(n, version)
    if failing >= opt.outage_budget_ms then
      dead_letter(n, version, 'outage_budget', reason .. ': ' .. detail, attempts)
      outcome = 'dead'
      counts.dead = counts.dead + 1
    else
      -- The wait grows with how long the number has been failing (a quarter of that, from
      -- the backoff base to the circuit's cap): a request that keeps failing as a whole
      -- while the provider answers others (the circuit stays closed) is not sent every
      -- few seconds for a day.
      local wait = math.min(opt.breaker_cap_ms, math.max(opt.backoff_base_ms, failing / 4))
      local delay = math.max(wait * (0.5 + r.jitter / 2), tonumber(r.retry_after_ms))
      redis.call('ZADD', P .. 'retry', int(NOW + delay), member)
      counts.outage = counts.outage + 1
    end
  elseif outcome == 'permanent' then
    attempts = attempts_of(n, version, 1)
    dead_letter(n, version, reason, detail, attempts)
    outcome = 'dead'
    counts.dead = counts.dead + 1
  elseif outcome == 'unsent' then
    counts.unsent = counts.unsent + 1
  else
    counts.stale = counts.stale + 1
  end
  if sent(r) then
    if r.outcome == 'outage' then
      if reason ~= 'rate_limited' then
        outages = outages + 1
        last_outage = reason .. ': ' .. detail
      end
    else
      answered = answered + 1
    end
    -- A request that failed may still have been applied: what the provider holds is
    -- unknown until the number's next push answers (an add-only target's confirmation
    -- stands: nothing there is ever removed).
    local ambiguous = r.outcome == 'retry' or r.outcome == 'outage'
    if overtaken or unsure or late or (ambiguous and not held_for_good(n)) then
      confirm(target, n, UNKNOWN)
    end
    local answer = cjson.encode({at = NOW, act = action, out = outcome, rsn = reason,
                                 det = detail, v = tonumber(version), n = attempts})
    -- The last answer stays beside the number only while it is a failure (what ops look
    -- at); a success is in the audit trail, and keeping it would cost every number
    -- confirmed everywhere a hash entry per target.
    if outcome == 'done' then
      redis.call('HDEL', P .. 'answer:' .. target, n)
    else
      redis.call('HSET', P .. 'answer:' .. target, n, answer)
    end
    -- The audit entry is the answer plus the target: spliced, not encoded a second time.
    audit_raw(n, '{"prov":' .. cjson.encode(target) .. ',' .. string.sub(answer, 2), opt.audit_cap)
  end
  -- The ledger moved while this push was in flight (or our answer does not count): the
  -- number's newest state goes out next, so an old action is never the last word.
  if sent(r) and meta(target).one_list then
    local lost_until = lost and NOW + opt.late_ms or nil
    if action == 'remove' then
      note_remove(target, n)
      if overtaken or lost then unsettle_siblings(target, n, touched, lost_until) end
    elseif r.outcome == 'retry' or r.outcome == 'outage' then
      -- A failed add may have moved the entry, or still may.
      unsettle_siblings(target, n, touched, lost_until)
    end
  end
  local led = redis.call('HMGET', P .. 'num:' .. n, 'v', 's', 'rs', 'src')
  -- Also when only the sources behind the block changed (an add routed here found the
  -- number blocked by one routed elsewhere): the version stays, the target's state moves.
  local moved = led[1] ~= version
    or target_state(target, led[2] or '', led[3] or led[4]) ~= want_state(action)
  local again = unsure or (overtaken and outcome == 'done')
  if mark == 'moved' and outcome == 'done' and not moved and not unsure
      and mover and is_live(mover) then
    -- Taken by another live target of ours: this one gets it back after a target TTL.
    again = false
    if is_live(target) then
      redis.call('ZADD', P .. 'retry', 'NX', int(NOW + opt.moved_retry_ms), member)
    end
  end
  if not sent(r) or moved or again then
    restage(target, n, true, touched)
  elseif late then
    -- Not at once: a push now could be overtaken just the same.
    redis.call('ZADD', P .. 'retry', 'GT', int(late + 1), member)
  end
end

redis.call('DEL', P .. 'chunk:' .. id)
redis.call('ZREM', P .. 'leases', id)
redis.call('HDEL', P .. 'opened', id)

if opt.hold_ms > 0 then hold_until(chunk.provider, NOW + opt.hold_ms) end
-- The circuit breaker: the provider answered something (closed), or every request of this
-- chunk failed as a whole (a failure; enough of them in a row, or one while probing, open
-- it: a hold for every worker with a backoff, then one chunk at a time probes).
local breaker = P .. 'breaker:' .. chunk.provider
local circuit = 'closed'
if answered > 0 then
  redis.call('DEL', breaker)
elseif outages > 0 then
  local opens = tonumber(redis.call('HGET', breaker, 'opens') or '0')
  local open_until = tonumber(redis.call('HGET', breaker, 'until') or '0')
  local fails = 0
  circuit = 'failing'
  if opens > 0 and open_until > NOW then
    circuit = 'open'  -- a push that was under way when it opened: not another failure
  else
    fails = redis.call('HINCRBY', breaker, 'fails', 1)
  end
  if circuit ~= 'open' and (opens > 0 or fails >= opt.breaker_threshold) then
    opens = redis.call('HINCRBY', breaker, 'opens', 1)
    local wait = math.min(opt.breaker_cap_ms, opt.backoff_base_ms * (2 ^ (opens - 1)))
    redis.call('HSET', breaker, 'fails', 0, 'until', int(NOW + wait),
               'reason', string.sub(last_outage, 1, 200))
    redis.call('HSETNX', breaker, 'since', int(NOW))
    hold_until(chunk.provider, NOW + wait)
    circuit = 'open'
  end
end
return cjson.encode({status = 'ok', counts = counts, staged = staged_summary(touched),
                     circuit = circuit, now = NOW})
