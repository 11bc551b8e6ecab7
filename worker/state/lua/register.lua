-- Announce the provider targets a process has enabled, with their capabilities: each stays
-- live for a while (the TTL) and every process that has it announces it again before then.
-- Accepts stage only for live targets (for every live target, whatever the accepting
-- process's own settings), so a target whose provider no process has enabled any more stops
-- collecting work. A target becoming live (seen for the first time, or back after its TTL
-- ran out) is caught up from the ledger by the sweep, unless the
-- ledger holds nothing it could need.
-- The routes go with them (OPTOUT_ROUTES: the last announcement's hold for the deployment):
-- which targets a block is owed to (prelude.lua: target_state).
-- ARGV: prefix, now_ms, metas JSON ({target: {provider, add_only, needs_ctx, ...}}), TTL ms,
--       routes JSON ({source: {include = [...], exclude = [...]}}; absent: left as they are)
-- Answers {live = [{target, catch_up}, ...] for the targets that became live, routes =
-- 'changed' (other routes were announced before), 'new' (none were) or false}
-- (records.py: Registered).
local metas = cjson.decode(ARGV[3])
local ttl = tonumber(ARGV[4])
local live_key = P .. 'targets:live'
local new = {}
local function start_catch_up(target)
  local catch_up = tonumber(redis.call('GET', P .. 'blocked:count') or '0') > 0
    or redis.call('EXISTS', P .. 'blocked') == 1
    or redis.call('HEXISTS', P .. 'targets:codes', target) == 1
    or redis.call('EXISTS', P .. 'confirmed:' .. target) == 1
  if catch_up then
    -- '@' and a number of its own: a step of an earlier catch-up, still at 'b:0' itself,
    -- must not take this one for its own (cursor.lua compares whole cursors). A target that
    -- was never confirmed anything (no code, no hash of the release before) holds nothing
    -- of ours whose ledger state could have moved: its catch-up ends after the blocked
    -- numbers ('!'), without the pass over the whole ledger for what it was confirmed to
    -- hold. (What it is confirmed from now on, while live, every change stages for it; if
    -- it lapses, it comes back to a whole catch-up.)
    local generation = redis.call('INCR', P .. 'backfill:seq')
    local never = redis.call('HEXISTS', P .. 'targets:codes', target) == 0
      and redis.call('EXISTS', P .. 'confirmed:' .. target) == 0
    redis.call('HSET', P .. 'backfill', target,
               'b:0@' .. generation .. (never and '!' or ''))
  else
    redis.call('HDEL', P .. 'backfill', target)
  end
  return catch_up
end
-- Routes that change (a rolling change of OPTOUT_ROUTES, or processes that disagree) change
-- the state target_state owes every target for numbers nothing pushes again: a claim under
-- the other routes may have dropped an add staged for a target, or a target may hold a
-- block no longer owed there. Every live target catches up from the ledger under the new
-- ones (the last change's catch-up runs to its end).
local routes_changed = false
local before = redis.call('GET', P .. 'routes')
if ARGV[5] and ARGV[5] ~= '' and before ~= ARGV[5] then
  -- 'new': none were announced before (a new deployment, or one from before routes were).
  routes_changed = before and 'changed' or 'new'
  redis.call('SET', P .. 'routes', ARGV[5])
  for _, target in ipairs(live_targets()) do start_catch_up(target) end
end
for target, m in pairs(metas) do
  redis.call('HSET', P .. 'targets', target, cjson.encode(m))
  local until_ms = tonumber(redis.call('ZSCORE', live_key, target) or '0')
  if until_ms < NOW then
    table.insert(new, {target = target, catch_up = start_catch_up(target)})
  end
  redis.call('ZADD', live_key, 'GT', NOW + ttl, target)
end
return cjson.encode({live = new, routes = routes_changed})
