-- Accept events in one round trip: idempotency, ledger (last-writer-wins), audit, staging.
-- ARGV: prefix, now_ms, then for each event (one, or a group: the API's group commit)
--       event JSON, idempotency TTL seconds, audit cap, route JSON ({include = [provider,
--       ...] (empty: all), exclude = [...], call = has a call record}), numbers JSON
--       ([[e164, name], ...]), idempotency mode, force ('1': taken as a new event whatever
--       its key says; see worker/pipeline/accept.py)
-- Answers one event's JSON (the end of accept_event) when given one event. For a group, an
-- array of them in the events' order: each event is accepted as a call of its own would
-- accept it, one after the other, and one whose accept failed (a write refused, a ledger
-- field it cannot read) answers {"status": "error", "error": ...} while the others are
-- written all the same; what it wrote before the failure stays, as a failed call of its
-- own would leave it (see the idempotency modes below). One call for a group spares each
-- event the script's fixed cost (~40 us of Redis a call: its arguments, the live targets,
-- the routes, the call itself).
-- Modes: 'once' (one part: check the key, record it), 'reserve' (the first part of a large
-- event: check the key and reserve it with the body's hash, so a different body under the
-- same key is refused while the parts are written), 'none' (middle parts), 'record' (the
-- last part: the event is complete). A retry of an event whose parts were not all written
-- finds its reservation and writes them again under the first event id (every part is
-- idempotent by itself).

-- The live targets, read once a call: NOW is the call's, and accepting changes none.
local LIVE = nil
local function live()
  if LIVE == nil then LIVE = live_targets() end
  return LIVE
end

local function accept_event(ev_json, ttl_arg, cap_arg, route_json, numbers_json, mode_arg,
                            force_arg)
  local ev = cjson.decode(ev_json)
  local idem_ttl = tonumber(ttl_arg)
  local cap = tonumber(cap_arg)
  local route = cjson.decode(route_json)
  local numbers = cjson.decode(numbers_json)
  local mode = mode_arg or 'once'
  local force = force_arg == '1'

  -- The event goes to every live target its source is routed to, whatever this process's own
  -- settings enable; a target that needs a call record the event lacks is
  -- named in the audit entry as not applicable.
  local targets, na = {}, {}
  local include, exclude = {}, {}
  -- An add goes where the announced routes (what target_state decides by) send its source:
  -- during a rolling change of OPTOUT_ROUTES this process's own may be the old ones, and an add
  -- they keep from a target the announced ones owe it would reach it never (the catch-up of
  -- the change may have passed the number, or ended). None announced: this process's own.
  local announced = ev.action == 'add' and announced_routes()
  if announced then
    local r = announced[ev.source] or {}
    route.include, route.exclude = r.include or {}, r.exclude or {}
  end
  for _, p in ipairs(route.include or {}) do include[p] = true end
  for _, p in ipairs(route.exclude or {}) do exclude[p] = true end
  for _, t in ipairs(live()) do
    local m = meta(t)
    local provider = m.provider or t
    if (next(include) == nil or include[provider]) and not exclude[provider] then
      if m.needs_ctx and not route.call then
        table.insert(na, t)
      else
        table.insert(targets, t)
      end
    end
  end
  table.sort(targets)
  table.sort(na)
  -- Live targets that need a call record and that this event is not routed to.
  local unrouted_ctx = {}
  if ev.cctx then
    local routed = {}
    for _, t in ipairs(targets) do routed[t] = true end
    for _, t in ipairs(na) do routed[t] = true end
    for _, t in ipairs(live()) do
      if meta(t).needs_ctx and not routed[t] then table.insert(unrouted_ctx, t) end
    end
    table.sort(unrouted_ctx)
  end
  if #na == 0 then na = nil end

  local idem_key = P .. 'idem:' .. ev.source .. ':' .. ev.key
  if not force and (mode == 'once' or mode == 'reserve') then
    local seen = redis.call('GET', idem_key)
    if seen then
      -- {hash}|{event id}, and |p while a large event's parts are still being written
      local sep = string.find(seen, '|', 1, true)
      local hash, rest = string.sub(seen, 1, sep - 1), string.sub(seen, sep + 1)
      local first_id, partial = rest, false
      local sep2 = string.find(rest, '|', 1, true)
      if sep2 then first_id, partial = string.sub(rest, 1, sep2 - 1), true end
      if hash ~= ev.hash then
        return cjson.encode({status = 'conflict', event_id = first_id})
      end
      if not partial then
        return cjson.encode({status = 'duplicate', event_id = first_id})
      end
      ev.id = first_id  -- a retry of an event not fully written: finish it
    end
  end
  -- Reserved before any number is written, complete only after (below): a retry of an event
  -- whose script failed partway finds the reservation and finishes it under its first id.
  if mode == 'once' or mode == 'reserve' then
    redis.call('SET', idem_key, ev.hash .. '|' .. ev.id .. '|p', 'EX', idem_ttl)
  end

  local t = tonumber(ev.t)
  local x = tonumber(ev.x)
  local touched = {}
  local results = {}
  -- Every number's audit entry is this event's, plus its result and version: encoded once.
  local audit_head = string.sub(cjson.encode({at = NOW, ev = ev.id, src = ev.source,
    act = ev.action, rsn = ev.reason, t = t, x = x, ctx = ev.ctx, na = na}), 1, -2)

  for _, pair in ipairs(numbers) do
    local n = pair[1]
    local name = pair[2]
    local key = P .. 'num:' .. n
    local cur = redis.call('HMGET', key, 's', 'v', 'x', 'rt', 'bl', 't', 'xr', 'c', 'rs', 'src')
    local state, v, cx = cur[1], tonumber(cur[2] or '0'), tonumber(cur[3] or '0')
    -- Every number's first event writes its state (see below): no state, a new number.
    local fresh = not state
    local rt, ct = tonumber(cur[4] or '-1'), tonumber(cur[6] or '0')
    local blocks = adopt_legacy(decode_blocks(cur[5], cur[6], cur[9]), cur[9] or cur[10])
    local result = nil
    if ev.action == 'add' then
      if t < rt then
        result = 'stale'  -- a remove newer than this add has already lifted it
      else
        table.insert(blocks, {t, x, ev.source})
        blocks = staircase(blocks)
      end
    elseif t > rt then
      rt = t
      blocks = keep_blocks(blocks, function(b) return b[1] >= rt end)
    end
    local ns, nx = derive(blocks)
    local changed = ns ~= state or nx ~= cx
    if result == nil then
      if changed then
        if state == 'blocked' and ns == 'blocked' then result = 'extended' else result = 'applied' end
      elseif ev.action == 'remove' and ns == 'blocked' then
        result = 'stale'  -- on a tie the add wins: a remove lifts only older blocks
      else
        result = 'unchanged'
      end
    end
    if t > ct then ct = t end
    -- One HSET per number: the ledger fields an event always writes, and those it writes
    -- when it changed the state.
    local fields = {'t', int(ct)}
    -- No remove yet is no field (readers take -1).
    if rt >= 0 then table.insert(fields, 'rt'); table.insert(fields, int(rt)) end
    local c, xr, sources = cur[8], cur[7], cur[9] or cur[10]
    if ev.cctx and ev.action == 'add' and result ~= 'stale' then
      -- The call this opt-out came from: call-record providers (Weya) need it to add.
      table.insert(fields, 'c'); table.insert(fields, ev.cctx)
      c = ev.cctx
    end
    -- The sources of the blocks behind the number's block (`rs`, what routes are judged by:
    -- target_state); a remove that lifted some sources' blocks but left others' takes the
    -- block from the targets only those sources were routed to. (Every block has its source
    -- here: adopt_legacy gave older ones theirs; only a ledger without rs or src has none.)
    local lifted_some = false
    local known = state == 'blocked' and cur[9] or nil
    local from_blocks = ns == 'blocked' and block_sources(blocks, known)
    if from_blocks then
      lifted_some = ev.action == 'remove' and state == 'blocked'
        and sources_shrank(cur[9], from_blocks)
      if from_blocks ~= cur[9] then
        table.insert(fields, 'rs'); table.insert(fields, from_blocks)
      end
      sources = from_blocks
    end
    table.insert(fields, 'bl'); table.insert(fields, encode_blocks(blocks, ct, from_blocks or cur[9]))
    if changed then
      v = v + 1
      for _, f in ipairs({'e', ev.id, 'src', ev.source, 'r', ev.reason or ''}) do
        table.insert(fields, f)
      end
      if name and name ~= '' then table.insert(fields, 'n'); table.insert(fields, name) end
      set_state(key, n, ns, nx, v, fields, fresh)
      if xr then redis.call('HDEL', key, 'xr'); xr = false end
    else
      redis.call('HSET', key, unpack(fields))
    end
    if from_blocks then
      local soonest = next_expiry(blocks)
      if soonest then redis.call('ZADD', P .. 'expiry', soonest, n) end
    end
    audit_raw(n, audit_head .. ',"res":"' .. result .. '","v":' .. int(v) .. '}', cap)
    -- What the ledger now holds, as restage would read it back. A remove goes to every
    -- target, routes or not; a remove that left the number blocked (stale, or older than a
    -- block) and a stale add stage nothing: the block they found is staged where it is
    -- routed already, and staging it here would carry it to targets its routes never named.
    local led = {ns, int(v), c, xr, sources}
    if (ev.action == 'add' and result ~= 'stale') or ns ~= 'blocked' or lifted_some then
      for _, target in ipairs(targets) do
        restage(target, n, changed or lifted_some, touched, led, fresh)
      end
    end
    -- A target that needs a call record this event lacks still gets a block the ledger has
    -- one for (an earlier add's), as a catch-up, a retry or a completion would stage it.
    if na and ev.action == 'add' and result ~= 'stale' and ns == 'blocked' and c and c ~= '' then
      for _, target in ipairs(na) do
        restage(target, n, changed, touched, led, fresh)
      end
    end
    -- The first call record, on an add routed elsewhere: a target that needs one may be owed
    -- the block through an earlier add routed there that had none (restage judges by the
    -- sources behind the block); nothing else would ever push it there.
    if ev.cctx and (not cur[8] or cur[8] == '') and ev.action == 'add' and result ~= 'stale'
        and ns == 'blocked' then
      for _, target in ipairs(unrouted_ctx) do
        restage(target, n, changed, touched, led, fresh)
      end
    end
    table.insert(results, result)
  end

  -- The key is recorded complete once every number is written (reserved above): Redis keeps
  -- what a script wrote before it failed (a write refused for memory, a ledger field it cannot
  -- read), and a key recorded complete first would answer the sender's retry as a duplicate
  -- while the numbers after the failure were never written.
  if mode == 'once' or mode == 'record' then
    redis.call('SET', idem_key, ev.hash .. '|' .. ev.id, 'EX', idem_ttl)
  end

  return cjson.encode({status = 'ok', event_id = ev.id, results = results,
                       staged = staged_summary(touched)})
end

-- The audit entries are written once the call's events are (prelude.lua: audited): one
-- stream entry a call. A call of one event that fails partway is answered as an error, and
-- the numbers it wrote before the failure keep their entries (a sender's retry finds the
-- event's reservation and writes every number again, each then `unchanged`: the entry that
-- says what the event changed is the first call's).
if #ARGV <= 9 then
  return accept_event(ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9])
end
-- Refusals of the server's, not of an event's: each refuses every write of the call (a
-- primary turned replica, fewer replicas than min-replicas-to-write, a disk error; OOM only
-- a call's first write), so no event of the group is accepted, and the call fails as a
-- whole with it, as each event's call of its own would have: redis-py reads the code
-- (READONLY: its Sentinel client drops the connection and asks where the primary went;
-- NOREPLICAS: an outage, worker/runtime/redis_clients.py). Answered per event, as a plain
-- error in an array, it was none of these: the API stayed on a demoted primary.
local REFUSALS = {READONLY = true, NOREPLICAS = true, MISCONF = true, OOM = true,
                  MASTERDOWN = true}
local function refused(err)
  if type(err) == 'table' then
    if REFUSALS[string.match(tostring(err.err), '^%-?(%u+) ')] then error(err) end
    return
  end
  err = tostring(err)
  -- Redis 7 has the code first; raised as a table, the call's error keeps it as its code.
  local code = string.match(err, '^%-?(%u+) ')
  if REFUSALS[code] then error({err = (string.gsub(err, '^%-', ''))}) end
  -- Redis 6 wraps it ('@user_script: 1: -NOREPLICAS ...'), as it does a call of its own.
  if REFUSALS[string.match(err, ': %-(%u+) ')] then error(err, 0) end
end

local out = {}
for i = 0, math.floor((#ARGV - 2) / 7) - 1 do
  local b = 3 + i * 7
  local ok, answer = pcall(accept_event, ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3],
                           ARGV[b + 4], ARGV[b + 5], ARGV[b + 6])
  if not ok then
    refused(answer)
    -- The error's message (Redis 7.0's pcall gives a redis.call error as a string, others
    -- as a table {err = ...}). Written by hand so that "status" comes first (cjson keeps no
    -- order): async_accept.py looks for it there.
    local message = type(answer) == 'table' and answer.err or answer
    answer = '{"status":"error","error":' .. cjson.encode(tostring(message)) .. '}'
  end
  out[#out + 1] = answer
end
-- A failed event's entries are written too (prelude.lua: audited), for the numbers it wrote
-- before its failure, as its own call's are; a refusal (above) raised before: nothing written.
return out
