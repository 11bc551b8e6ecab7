-- Helpers shared by every optout script (prepended by worker/state/keyspace.py).
-- Keys are built here from a prefix passed in ARGV[1]: multi-key scripts like these are why
-- optout-worker runs on a single Redis (or Sentinel), never Redis Cluster.
local P = ARGV[1]
-- The time: the caller's when it passes one (tests' fake clocks), else the server's as the
-- script runs, one clock for every process on every host (worker/state/clock.py): a time read
-- before the call would be late by however long the call took to arrive.
local NOW = tonumber(ARGV[2])
if NOW == nil then
  -- Writes after TIME need effects replication: the default from Redis 5, the only kind in 7.
  if redis.replicate_commands then redis.replicate_commands() end
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local unpack = unpack or table.unpack -- Redis runs Lua 5.1; fakeredis may run 5.4

local function int(x)
  return string.format('%d', x)
end

local function want_state(action)
  if action == 'add' then return 'blocked' end
  return 'unblocked'
end

-- A chunk's item as `chunk:{id}` keeps it: a list, these fields at these positions
-- (worker/state/records.py: ChunkItem has the same fields in the same order). A list, not
-- an object: a chunk written by one version is read by the next during an upgrade.
local ITEM = {e164 = 1, version = 2, name = 3, expires_ms = 4, context = 5, source = 6,
              reason = 7, updated_ms = 8}

local function chunk_item(e164, version, name, expires_ms, context, source, reason, updated_ms)
  return {e164, version, name, expires_ms, context, source, reason, updated_ms}
end

local function action_for(state)
  if state == 'blocked' then return 'add' end
  return 'remove'
end

local function opposite(action)
  if action == 'add' then return 'remove' end
  return 'add'
end

-- Audit entries (a JSON object's text each, for number `n`) are gathered while a script runs
-- and written by audit_flush as one entry of the stream `audit:batches`: the numbers and the
-- entries, each joined by newlines (compact JSON has none), which the archiver drains into the
-- database (worker/archive/) as one row per number (worker/state/auditlog.py). One entry a
-- call, not a stream entry and a tail entry per number, each removed again by the drain:
-- that was a third of Redis's time per pushed number. Until the drain, a number's history
-- reads them from the stream (lua/recent.lua). `audit:rows` counts the rows waiting (the
-- backlog accepts are bounded by). Every script runs through `audited` (below, as
-- worker/state/keyspace.py loads it), which flushes once it has answered or failed.
-- `cap`: what the tails of the release before kept (`audit:{e164}`, lua/archived.lua).
local AUDIT_NUMBERS, AUDIT_ENTRIES = {}, {}

local function audit_raw(n, json, cap)
  AUDIT_NUMBERS[#AUDIT_NUMBERS + 1] = n
  AUDIT_ENTRIES[#AUDIT_ENTRIES + 1] = json
end

local function audit(n, entry, cap)
  audit_raw(n, cjson.encode(entry), cap)
end

-- Rows a batch holds at most: a row's order is ms * 1,000,000 + n * 1,000 + its place
-- (worker/state/auditlog.py: seq_of), so a place of 1,000 or more would share it with the
-- next batch's rows of the same ms, and order after them. A call of more entries (the admin
-- API purges or replays every chosen dead letter in one call) writes several batches.
local AUDIT_BATCH_ROWS = 1000

local function audit_flush()
  local count = #AUDIT_NUMBERS
  if count == 0 then return end
  for first = 1, count, AUDIT_BATCH_ROWS do
    local last = math.min(first + AUDIT_BATCH_ROWS - 1, count)
    redis.call('XADD', P .. 'audit:batches', '*',
               'n', table.concat(AUDIT_NUMBERS, '\n', first, last),
               'e', table.concat(AUDIT_ENTRIES, '\n', first, last))
  end
  redis.call('INCRBY', P .. 'audit:rows', count)
  AUDIT_NUMBERS, AUDIT_ENTRIES = {}, {}
end

-- A script's body, run so that its audit entries are written whether it answers or fails:
-- Redis keeps what a script wrote before it failed (a ledger field it cannot read, a key of
-- another type), and each change it made must keep its entry, as when every entry was
-- written as it was made. Its error is raised again as the call would have answered it
-- without pcall: Redis 7 answers a Redis error with its code first (WRONGTYPE; a refusal of
-- the server's, READONLY, NOREPLICAS, OOM, which redis-py and worker/runtime/redis_clients.py
-- read by it; those come at a call's first write, before any entry) when it is raised as a
-- table, and 7.0's pcall gives it as a string, which raised as one would answer ERR; Redis 6
-- takes only strings (its handler of a table error fails), wrapped in ERR as before.
local function audited(body)
  local ok, answer = pcall(body)
  audit_flush()
  if not ok then
    if type(answer) == 'table' then error(answer) end
    answer = tostring(answer)
    if redis.REDIS_VERSION and string.match(answer, '^%-?%u+ ') then
      error({err = (string.gsub(answer, '^%-', ''))})
    end
    error(answer, 0)
  end
  return answer
end

-- The ledger keeps, per number, the latest remove time `rt` and the blocks (event time t,
-- expiry x; x = 0 is permanent) newer than it, reduced to a staircase: a block is dropped when
-- another is at least as new and lasts at least as long. The number is blocked while any
-- block remains, until the longest expiry. That makes the result the same for any arrival
-- order of the same events: a remove lifts every block older than itself (on a tie the add
-- wins), and blocks merge to the longest expiry.
local INF = math.huge

local function span(x)
  if x == 0 then return INF end
  return x
end

-- Per source (b[3]; a block written before sources were kept has none): a block that
-- another source's newer, longer one covers still decides where that source's opt-out is
-- owed (target_state), and until when; dropping it changes nothing of the number's state.
local function staircase(blocks)
  table.sort(blocks, function(a, b)
    if a[1] ~= b[1] then return a[1] > b[1] end
    return span(a[2]) > span(b[2])
  end)
  local kept, longest = {}, {}
  for _, b in ipairs(blocks) do
    local src = b[3] or ''
    if span(b[2]) > (longest[src] or -1) then
      table.insert(kept, 1, b)
      longest[src] = span(b[2])
    end
  end
  return kept
end

-- The sources of the blocks that remain (`rs`), in the order `known` (the raw `rs` before)
-- has them, new ones last; nil when one of the blocks predates sources.
local function block_sources(blocks, known)
  local present = {}
  for _, b in ipairs(blocks) do
    if not b[3] then return nil end
    present[b[3]] = true
  end
  local out = {}
  for src in string.gmatch(known or '', '[^\n]+') do
    if present[src] then
      table.insert(out, src)
      present[src] = nil
    end
  end
  for _, b in ipairs(blocks) do
    if present[b[3]] then
      table.insert(out, b[3])
      present[b[3]] = nil
    end
  end
  return table.concat(out, '\n')
end

-- The earliest end of a temporary block (a source's, when another keeps the number blocked
-- for longer: expire.lua lifts it where only that source is routed), or nil.
local function next_expiry(blocks)
  local soonest = nil
  for _, b in ipairs(blocks) do
    if b[2] > 0 and (soonest == nil or b[2] < soonest) then soonest = b[2] end
  end
  return soonest
end

-- Whether `after` lacks a source `before` named (both raw `rs` values).
local function sources_shrank(before, after)
  if not before or not after then return false end
  local kept = {}
  for src in string.gmatch(after, '[^\n]+') do kept[src] = true end
  for src in string.gmatch(before, '[^\n]+') do
    if not kept[src] then return true end
  end
  return false
end

local function keep_blocks(blocks, keep)
  local out = {}
  for _, b in ipairs(blocks) do
    if keep(b) then table.insert(out, b) end
  end
  return out
end

-- (state, expiry) the blocks add up to.
local function derive(blocks)
  if #blocks == 0 then return 'unblocked', 0 end
  local longest = 0
  for _, b in ipairs(blocks) do
    if b[2] == 0 then return 'blocked', 0 end
    if b[2] > longest then longest = b[2] end
  end
  return 'blocked', longest
end

-- `bl` of the most common ledger by far: one permanent block, from the ledger's only source
-- (`rs`), at the ledger's event time (`t`). Its JSON would take ~30 bytes of every such
-- number's hash, and the hash's allocation is what a blocked number costs.
local BLOCK_AT_T = '='

-- `t` and `rs`: the ledger's own fields beside `bl`, which its short form stands on.
local function decode_blocks(raw, t, rs)
  if not raw or raw == '' then return {} end
  if raw == BLOCK_AT_T then return {{tonumber(t), 0, rs}} end
  local out = {}
  for _, b in ipairs(cjson.decode(raw)) do
    table.insert(out, {tonumber(b[1]), tonumber(b[2]), type(b[3]) == 'string' and b[3] or nil})
  end
  return out
end

-- A block written before blocks kept their source: taken for a block of each source the
-- ledger named behind it (`known`: the raw `rs`, or `src` before that was kept), split as
-- target_state splits them. Never narrower than what the ledger owed: without it, any
-- ledger holding one kept no source for the blocks added since either (block_sources: nil),
-- and a source's block ran out, or was lifted, nowhere while another stood.
local function adopt_legacy(blocks, known)
  if not known then return blocks end
  local out, adopted = {}, false
  for _, b in ipairs(blocks) do
    if b[3] then
      table.insert(out, b)
    else
      adopted = true
      for src in string.gmatch(known .. '\n', '([^\n]*)\n') do
        table.insert(out, {b[1], b[2], src})
      end
    end
  end
  if not adopted then return blocks end
  return staircase(out)
end

-- `t` and `rs`: what the ledger's fields of those names hold once this is written; every
-- write of either writes `bl` too (accept, expire, adopt), so the short form never outlives
-- what it stands on.
local function encode_blocks(blocks, t, rs)
  if #blocks == 0 then return '[]' end
  local b = blocks[1]
  if #blocks == 1 and b[2] == 0 and b[3] and b[3] == rs and b[1] == tonumber(t) then
    return BLOCK_AT_T
  end
  local parts = {}
  for _, b in ipairs(blocks) do
    local src = b[3] and (',' .. cjson.encode(b[3])) or ''
    table.insert(parts, '[' .. int(b[1]) .. ',' .. int(b[2]) .. src .. ']')
  end
  return '[' .. table.concat(parts, ',') .. ']'
end

-- The numbers the ledger blocks, in BLOCKED_BUCKETS sets by the last six digits (the same
-- split as worker/state/ledger.py: blocked_bucket), each member the number's digits: a set
-- of a few hundred integers is a compact array of them (an intset, up to Redis's
-- set-max-intset-entries, 512 by default: from ~50,000 to ~15 million numbers), about 10
-- bytes a number where one set of strings costs 50. `blocked:count` counts them, and the
-- bitmap `blocked:used` marks the buckets that hold any (a scan of a small ledger reads a
-- handful of buckets, not all of them).
-- A deployment from before kept them in one set, `blocked`: while it exists its members
-- count as blocked too, and move.lua moves them here.
local BLOCKED_BUCKETS = 32768
local function blocked_bucket_of(n)
  return tonumber(string.sub(n, -6)) % BLOCKED_BUCKETS
end

local OLD_BLOCKED = nil
local function old_blocked()
  if OLD_BLOCKED == nil then
    OLD_BLOCKED = redis.call('EXISTS', P .. 'blocked') == 1
  end
  return OLD_BLOCKED
end

local function block_number(n)
  local bucket = blocked_bucket_of(n)
  if redis.call('SADD', P .. 'blocked:' .. bucket, string.sub(n, 2)) == 1 then
    redis.call('INCR', P .. 'blocked:count')
    redis.call('SETBIT', P .. 'blocked:used', bucket, 1)
  end
  if old_blocked() then redis.call('SREM', P .. 'blocked', n) end
end

local function unblock_number(n)
  local bucket = blocked_bucket_of(n)
  local key = P .. 'blocked:' .. bucket
  if redis.call('SREM', key, string.sub(n, 2)) == 1 then
    redis.call('DECR', P .. 'blocked:count')
    if redis.call('EXISTS', key) == 0 then
      redis.call('SETBIT', P .. 'blocked:used', bucket, 0)
    end
  end
  if old_blocked() then redis.call('SREM', P .. 'blocked', n) end
end

-- Write a number's new derived state: version, the blocked set, the expiry index.
-- `extra`: more field/value pairs for the same HSET. `fresh`: the ledger did not hold the
-- number before this script (see restage).
local function set_state(key, n, state, x, v, extra, fresh)
  -- No expiry is no field (readers take 0): most blocks are for good, and every byte of a
  -- ledger hash counts ten million times.
  if x > 0 then
    redis.call('HSET', key, 's', state, 'x', int(x), 'v', int(v), 'u', int(NOW),
               unpack(extra or {}))
  else
    redis.call('HSET', key, 's', state, 'v', int(v), 'u', int(NOW), unpack(extra or {}))
    if not fresh then redis.call('HDEL', key, 'x') end
  end
  if state == 'blocked' then
    block_number(n)
  elseif not fresh then
    unblock_number(n)
  end
  -- A temporary block waits in `expiry` for the sweep that lifts it.
  if state == 'blocked' and x > 0 then
    redis.call('ZADD', P .. 'expiry', x, n)
  elseif not fresh then
    redis.call('ZREM', P .. 'expiry', n)
  end
end

-- Hold a provider for every worker until `until_ms` (a Retry-After, an open circuit): the
-- later end wins, so a shorter hold never cuts a longer one short.
local function hold_until(provider, until_ms)
  local key = P .. 'hold:' .. provider
  local current = tonumber(redis.call('GET', key) or '0')
  if until_ms > current then
    redis.call('SET', key, int(until_ms), 'PX', int(until_ms - NOW + 60000))
    return until_ms
  end
  return current
end

-- What a confirmation (conf_field) holds for a number whose state at the provider is
-- unknown (a push whose answer no longer counts may have landed after a newer one): it
-- matches no ledger state, so the number is pushed again.
local UNKNOWN = '?'

-- Where a target's confirmation for a number is kept: a field of the number's own ledger
-- hash, `k{code}` (the target's code in `targets:codes`, given once and never reused), so a
-- number confirmed at every target costs a few bytes a target, not an entry in a hash per
-- target (worker/state/store.py). Confirmations written before were kept in
-- `confirmed:{target}`: while that hash exists (move.lua empties it; an older process of
-- a rolling upgrade may still write it), its entry is the newer word, and a write here
-- takes it out.
local CODES = {}
local function conf_field(target)
  local field = CODES[target]
  if field == nil then
    local code = redis.call('HGET', P .. 'targets:codes', target)
    if not code then
      code = redis.call('INCR', P .. 'targets:codeseq')
      redis.call('HSET', P .. 'targets:codes', target, code)
    end
    field = 'k' .. code
    CODES[target] = field
  end
  return field
end

local LEGACY = {}
local function legacy_confirmed(target)
  local key = LEGACY[target]
  if key == nil then
    key = P .. 'confirmed:' .. target
    if redis.call('EXISTS', key) == 0 then key = false end
    LEGACY[target] = key
  end
  return key
end

-- A confirmation as the ledger keeps it: 'b3' for 'blocked:3', 'u3' for 'unblocked:3' (a
-- few bytes a target are what tips a ledger hash into the next allocation size).
local function pack_conf(value)
  local state, v = string.match(value, '^(%l)%l*:(%d+)$')
  if state then return state .. v end
  return value
end

local function unpack_conf(raw)
  local kind = raw and string.sub(raw, 1, 1)
  if kind == 'b' then return 'blocked:' .. string.sub(raw, 2) end
  if kind == 'u' then return 'unblocked:' .. string.sub(raw, 2) end
  return raw
end

-- What the target is confirmed to hold for the number ('{state}:{version}', UNKNOWN), or false.
local function confirmed(target, n)
  local legacy = legacy_confirmed(target)
  local conf = legacy and redis.call('HGET', legacy, n)
  if conf then return conf end
  return unpack_conf(redis.call('HGET', P .. 'num:' .. n, conf_field(target)))
end

local function confirm(target, n, value)
  redis.call('HSET', P .. 'num:' .. n, conf_field(target), pack_conf(value))
  local legacy = legacy_confirmed(target)
  if legacy then redis.call('HDEL', legacy, n) end
end

-- `unknown:{target}` marks the push in flight for a number whose answer will not count: its
-- chunk id when a recovered chunk's late request may have landed after it (pushed again at
-- once), or 'm:{id}>{mover}' when `mover`, another target of ours, took the number from
-- this one meanwhile (a move at a provider that keeps a number in one list: see took_from).
-- Takes this chunk's mark: false, 'overtaken', or 'moved' and the mover.
local function take_mark(target, n, id)
  local key = P .. 'unknown:' .. target
  local mark = redis.call('HGET', key, n)
  if mark == id then
    redis.call('HDEL', key, n)
    return 'overtaken'
  end
  local mover = mark and string.sub(mark, 1, #id + 3) == 'm:' .. id .. '>'
    and string.sub(mark, #id + 4)
  if mover or mark == 'm:' .. id then  -- (no mover named: treated as one that is gone)
    redis.call('HDEL', key, n)
    return 'moved', mover or nil
  end
  return false
end

-- A request its push has lost (the chunk was recovered or completed by another delivery
-- of its task; the request failed as a whole, a timeout or a 5xx, and the provider may
-- still be working on it) may land until a lease and an HTTP timeout later, after a newer
-- push's, and no answer may ever tell us. `late:{target}` keeps, per number, the latest
-- such time: a push leased before it is confirmed by one more push after it (complete.lua).
-- `latesib:{provider}`: the same at a provider that keeps a number in one list (Daktela),
-- where a late request at one target of ours may take another's entry (unsettle_siblings);
-- by provider, so that a target registered meanwhile sees it too.
local function may_land_until(key, n, until_ms)
  key = P .. key
  if tonumber(redis.call('HGET', key, n) or '0') < until_ms then
    redis.call('HSET', key, n, int(until_ms))
  end
end

-- Whether more than one push has opened the chunk (a task delivered twice: open.lua).
local function opened_twice(id)
  return tonumber(redis.call('HGET', P .. 'opened', id) or '0') > 1
end

-- The targets some process has announced within their TTL (register.lua): the ones that
-- get new work. A target seen lapsed here leaves `targets:live`, so that the work a script
-- leaves to its catch-up is done whatever the clock does next: register.lua starts one for
-- a target it does not find there, where a score alone, after a step back of the clock (a
-- failover to a replica whose clock lags, a caller's own time), could look live still.
local function live_targets()
  redis.call('ZREMRANGEBYSCORE', P .. 'targets:live', '-inf', '(' .. int(NOW))
  return redis.call('ZRANGEBYSCORE', P .. 'targets:live', NOW, '+inf')
end

local function is_live(target)
  local until_ms = redis.call('ZSCORE', P .. 'targets:live', target)
  if until_ms and tonumber(until_ms) >= NOW then return true end
  if until_ms then redis.call('ZREM', P .. 'targets:live', target) end
  return false
end

-- A target's capabilities, as registered by worker/state/targets.py: register_targets.
local META = {}
local function meta(target)
  local m = META[target]
  if m == nil then
    local raw = redis.call('HGET', P .. 'targets', target)
    if raw then m = cjson.decode(raw) else m = {} end
    META[target] = m
  end
  return m
end

-- The deployment's routes (OPTOUT_ROUTES, as the last process to announce its targets has
-- them: register.lua): source -> {include = [provider, ...] (empty: all), exclude = [...]};
-- nil when none were announced (every source goes everywhere). Read once per script.
local ROUTES = nil
local function announced_routes()
  if ROUTES == nil then
    local raw = redis.call('GET', P .. 'routes')
    ROUTES = raw and cjson.decode(raw) or false
  end
  return ROUTES or nil
end

local function listed(list, x)
  for _, y in ipairs(list or {}) do
    if y == x then return true end
  end
  return false
end

-- The state a target should hold for a number: the ledger's, but a block only where one of
-- the adds behind it (`rs`, the sources of those adds; a ledger written before it was kept:
-- `src`, the last change's) was routed. A block owed nowhere here is a remove for a target
-- that may hold the number from before (a block routed there, since lifted), so that a
-- push of the lift that finds the number blocked again by a source routed elsewhere still
-- lifts it there. `led`: at least {s}; `rs`: the raw `rs` field or false.
local function target_state(target, state, rs)
  if state ~= 'blocked' or not rs or rs == '' then return state end
  local table_ = announced_routes()
  -- No routes (most deployments): every source goes everywhere, at no cost per number.
  if not table_ or next(table_) == nil then return state end
  local provider = meta(target).provider or target
  -- Split as worker/state/ledger.py's ledger_sources does: an empty source (a line break at an
  -- end, or alone) is no OPTOUT_ROUTES key, so routed everywhere.
  for src in string.gmatch(rs .. '\n', '([^\n]*)\n') do
    local r = table_[src]
    if r == nil then return state end
    local include = r.include or {}
    if (#include == 0 or listed(include, provider)) and not listed(r.exclude, provider) then
      return state
    end
  end
  return 'unblocked'
end

-- Whether a late mark (`key`: late:{target} or latesib:{provider}) that `until_ms` has
-- passed may go: no push in flight for the number at one of the targets it covers was
-- leased at or before it (that push's answer still needs it: complete.lua).
local function late_mark_spent(key, n, until_ms)
  local kind, owner_of = string.match(key, '^([^:]+):(.+)$')
  local covered = {owner_of}
  if kind == 'latesib' then
    covered = {}
    for _, t in ipairs(redis.call('HKEYS', P .. 'targets')) do
      if meta(t).provider == owner_of then table.insert(covered, t) end
    end
  end
  for _, t in ipairs(covered) do
    local chunk_id = redis.call('HGET', P .. 'inflight:' .. t, n)
    local raw = chunk_id and redis.call('GET', P .. 'chunk:' .. chunk_id)
    if raw and tonumber(cjson.decode(raw).created) <= until_ms then return false end
  end
  return true
end

-- Stage the number's current desired state for one target, unless that state is already
-- confirmed there or a push for it is in flight (its completion re-stages if the ledger
-- moved). `force` is false for events that changed nothing: they must not cut short a
-- backoff or resurrect a dead letter. `touched` collects, per target|action, the batch's
-- size before this call (0: its linger starts now). `led`: the ledger's {s, v, c, xr, rs}
-- when the caller has just written them (else read here). `fresh`: the ledger did not hold
-- the number before this script; nothing but the ledger writes a number in, so nothing is
-- staged, in flight, retrying, dead-lettered or confirmed for it, and the calls that would
-- only find that out are skipped (a bulk accept of new numbers: half its calls).
local function restage(target, n, force, touched, led, fresh)
  led = led or redis.call('HMGET', P .. 'num:' .. n, 's', 'v', 'c', 'xr', 'rs', 'src')
  if not led[1] then return false end
  if not fresh and redis.call('HEXISTS', P .. 'inflight:' .. target, n) == 1 then
    return false
  end
  local member = target .. '|' .. n
  local m = meta(target)
  local state = target_state(target, led[1], led[5] or led[6])
  if state ~= led[1] then
    -- A block routed elsewhere only: a remove, but only where a block may be held.
    local conf = not fresh and confirmed(target, n)
    if m.add_only or not conf or string.sub(conf, 1, 10) == 'unblocked:' then
      redis.call('ZREM', P .. 'stage:' .. target .. ':add', n)
      if not fresh then
        redis.call('ZREM', P .. 'stage:' .. target .. ':remove', n)
        redis.call('ZREM', P .. 'retry', member)
      end
      return false
    end
  end
  if m.add_only then
    -- No remove endpoint, and each add may notify someone: an add-only target gets a
    -- number once, ever.
    if fresh then
      if state ~= 'blocked' then return false end
    else
      local conf = confirmed(target, n)
      if state ~= 'blocked' or (conf and string.sub(conf, 1, 8) == 'blocked:') then
        redis.call('ZREM', P .. 'stage:' .. target .. ':add', n)
        redis.call('ZREM', P .. 'retry', member)
        return false
      end
    end
  end
  if m.needs_ctx and (not led[3] or led[3] == '') then return false end
  if m.native_expiry and led[1] == 'unblocked' and led[4] == '1'
      and confirmed(target, n)
        == 'blocked:' .. int(tonumber(led[2]) - 1) then
    -- The provider holds the very block that just expired (expire.lua lifts it as the next
    -- version), with its expiry: it lifted it itself, nothing to send. Anything else there
    -- (an older, longer block; an unknown state) gets a remove.
    confirm(target, n, led[1] .. ':' .. led[2])
    redis.call('ZREM', P .. 'stage:' .. target .. ':add', n)
    redis.call('ZREM', P .. 'stage:' .. target .. ':remove', n)
    redis.call('ZREM', P .. 'retry', member)
    return false
  end
  if not force then
    if redis.call('ZSCORE', P .. 'retry', member) then return false end
    -- A dead letter waits for a person, but only for the state it failed to push: one of
    -- an older version says nothing about the ledger's (an accept would have staged it).
    local dead = redis.call('HGET', P .. 'dlq', member)
    if dead then
      local entry = cjson.decode(dead)
      if tonumber(entry.version) == tonumber(led[2])
          and (entry.action or action_for(state)) == action_for(state) then
        return false
      end
    end
  end
  local act = action_for(state)
  local key = P .. 'stage:' .. target .. ':' .. act
  if not fresh then
    redis.call('ZREM', P .. 'stage:' .. target .. ':' .. opposite(act), n)
    redis.call('ZREM', P .. 'retry', member)
    if confirmed(target, n) == state .. ':' .. led[2] then
      redis.call('ZREM', key, n)
      return false
    end
  end
  local tk = target .. '|' .. act
  if touched[tk] == nil then
    touched[tk] = redis.call('ZCARD', key)
  end
  redis.call('ZADD', key, 'NX', NOW, n)
  return true
end

-- A push to a provider that keeps a number in one list only (Daktela), whose outcome is
-- uncertain (a failed request, an answer that no longer counts, or none), may have taken
-- the number from another target of ours: an add moves the entry into its list, and a
-- remove deletes by the entry's name, looked up before, what another target may have taken
-- meanwhile. Every other target of that provider that holds the number blocked is unknown
-- now and pushed again; an add of it in flight confirms nothing (a remove in flight wants
-- the entry gone anyway). `late_until_ms`: a request of that push may still land until
-- then (see may_land_until), after the other targets' next adds.
local function unsettle_siblings(target, n, touched, late_until_ms)
  local m = meta(target)
  if not m.one_list then return end
  if late_until_ms then may_land_until('latesib:' .. m.provider, n, late_until_ms) end
  for _, other in ipairs(redis.call('HKEYS', P .. 'targets')) do
    if other ~= target and meta(other).provider == m.provider then
      local owner = redis.call('HGET', P .. 'inflight:' .. other, n)
      local raw = owner and redis.call('GET', P .. 'chunk:' .. owner)
      if raw and cjson.decode(raw).action == 'add' then
        redis.call('HSET', P .. 'unknown:' .. other, n, owner)
      end
      local conf = confirmed(other, n)
      if conf and string.sub(conf, 1, 8) == 'blocked:' then
        confirm(other, n, UNKNOWN)
        -- A target that is not live now is caught up when it comes back.
        if is_live(other) and not owner then restage(other, n, true, touched) end
      end
    end
  end
end

-- When a remove at a provider that keeps a number in one list last answered, or was given
-- up on (a recovered chunk), for a number: a move into another of our targets soon after
-- may have been undone by that remove's delete (see complete.lua).
local function note_remove(target, n)
  if not meta(target).one_list then return end
  local key = P .. 'num:' .. n
  -- Never earlier than it was: another host's clock may lag a little.
  if tonumber(redis.call('HGET', key, 'ol') or '0') < NOW then
    redis.call('HSET', key, 'ol', int(NOW))
  end
end

-- Our push took the number's entry from `from`, another target of ours at a provider that
-- keeps a number in one list (a rolling change of Daktela's database): its confirmation no
-- longer holds, and neither will the answer of its push in flight now. While `target` is
-- live, `from` is pushed again only after `delay_ms` (a target TTL: by then the old
-- database of a rolling change has lapsed and the live one keeps the number; at once, two
-- live targets would take it from each other without end); when `target` is not live (a
-- late push of a target that is gone), at once.
local function took_from(target, n, from, delay_ms, touched)
  if from == target or redis.call('HEXISTS', P .. 'targets', from) == 0 then return false end
  confirm(from, n, UNKNOWN)
  local owner = redis.call('HGET', P .. 'inflight:' .. from, n)
  if owner then
    redis.call('HSETNX', P .. 'unknown:' .. from, n, 'm:' .. owner .. '>' .. target)
  elseif is_live(from) then
    if is_live(target) then
      redis.call('ZADD', P .. 'retry', 'NX', int(NOW + delay_ms), from .. '|' .. n)
    else
      restage(from, n, true, touched)
    end
  end
  return true
end

-- What callers need to schedule flushes: per target|action, the batch size before this
-- call touched it and after, and the numbers in flight to the target (at its cap, the
-- pushes in flight take a filled chunk themselves: no flush is needed).
local function staged_summary(touched)
  local out = {}
  for tk, before in pairs(touched) do
    local sep = string.find(tk, '|', 1, true)
    local target = string.sub(tk, 1, sep - 1)
    local act = string.sub(tk, sep + 1)
    local count = redis.call('ZCARD', P .. 'stage:' .. target .. ':' .. act)
    local inflight = redis.call('HLEN', P .. 'inflight:' .. target)
    table.insert(out, {target = target, action = act, count = count, before = before,
                       in_flight = inflight})
  end
  return out
end

-- A request slot of `provider` for `token`, if its caps allow one now (slot.lua): a
-- concurrency cap held as leases that expire (a worker killed mid-request leaks nothing)
-- and a requests-per-second cap over the last second. `within`: ms within which the request
-- goes out (0: at once): the rate cap counts it from the latest of those, so that one sent a
-- little after its slot was taken never lets the next second's requests follow it closer
-- than the cap allows. Answers 0 when taken, else the ms to wait before asking again.
local function take_slot(provider, token, rps, cap, lease, within)
  local slots = P .. 'slots:' .. provider
  local rate = P .. 'rate:' .. provider
  redis.call('ZREMRANGEBYSCORE', slots, '-inf', NOW)
  redis.call('ZREMRANGEBYSCORE', rate, '-inf', NOW - 1000)
  if cap > 0 and redis.call('ZCARD', slots) >= cap then
    local first = redis.call('ZRANGE', slots, 0, 0, 'WITHSCORES')
    return math.max(5, math.min(50, tonumber(first[2]) - NOW))
  end
  if rps > 0 and redis.call('ZCARD', rate) >= rps then
    local oldest = redis.call('ZRANGE', rate, 0, 0, 'WITHSCORES')
    return math.max(1, tonumber(oldest[2]) + 1000 - NOW)
  end
  redis.call('ZADD', slots, NOW + lease, token)
  redis.call('ZADD', rate, NOW + (within or 0), token)
  redis.call('PEXPIRE', slots, lease + 1000)
  redis.call('PEXPIRE', rate, 2000 + (within or 0))
  return 0
end

-- What a push's open (or its chain's claim) passes for its chunk's first request slot:
-- one JSON argument, {token = ..., within = ms the request goes out within (take_slot),
-- terms = {provider = [rps, cap, lease ms], ...}} (the providers whose first request may
-- take one: a bulk provider's push), or '' (absent) for none.
local function slot_terms(raw)
  if raw == nil or raw == '' then return nil end
  return cjson.decode(raw)
end

-- A push's first look at a chunk (open.lua; claim.lua hands a chain its next chunk opened):
-- the chunk, whether its provider is stopped, each number's state and version, the lease
-- started again and the opening counted. Returns {chunk = false} when the chunk is gone.
-- `known` (claim.lua, for the chunk it has just written in the same call): its JSON, its
-- table and each number's state and version as that call read them, not read again.
-- `slot`: slot_terms. The chunk's first request slot is taken in this round trip when its
-- provider has terms there, is not stopped and its caps allow (`slot` in the answer: the
-- token): a bulk provider's push sends that request next, and a round trip of its own for
-- the slot waited behind every script queued in Redis (worker/pipeline/push.py).
local function open_chunk(id, lease_ms, known, slot)
  local raw = known and known.raw or redis.call('GET', P .. 'chunk:' .. id)
  if not raw then return {chunk = false} end
  redis.call('ZADD', P .. 'leases', 'GT', NOW + lease_ms, id)
  redis.call('HINCRBY', P .. 'opened', id, 1)
  local chunk = known and known.chunk or cjson.decode(raw)
  local stopped = redis.call('HEXISTS', P .. 'paused', chunk.provider) == 1
  if tonumber(redis.call('GET', P .. 'hold:' .. chunk.provider) or '0') > NOW then
    stopped = true
  end
  local states, versions = {}, {}
  local add_only = meta(chunk.target).add_only
  for _, item in ipairs(chunk.items) do
    local n = item[ITEM.e164]
    local state, version
    if known then
      state, version = known.states[n], known.versions[n]
    else
      local led = redis.call('HMGET', P .. 'num:' .. n, 's', 'v', 'rs', 'src')
      state, version = target_state(chunk.target, led[1] or '', led[3] or led[4]), led[2] or ''
    end
    if add_only then
      local conf = confirmed(chunk.target, n)
      if conf and string.sub(conf, 1, 8) == 'blocked:' then state = 'held' end
    end
    states[n] = state
    versions[n] = version
  end
  local taken = nil
  local terms = slot and slot.terms[chunk.provider]
  if terms and not stopped
      and take_slot(chunk.provider, slot.token, terms[1], terms[2], terms[3], slot.within)
        == 0 then
    taken = slot.token
  end
  return {chunk = raw, stopped = stopped, states = states, versions = versions, slot = taken}
end
