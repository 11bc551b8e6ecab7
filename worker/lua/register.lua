-- Record each provider target's capabilities; a target seen for the first time gets a
-- backfill cursor so it is filled from the ledger's blocked numbers (design.md step 9),
-- unless the ledger blocks none yet (a new deployment): then accepts stage it as they come.
-- ARGV: prefix, now_ms, metas JSON ({target: {provider, add_only, needs_ctx}})
-- Answers [[target, backfill?], ...] for the targets seen for the first time.
local metas = cjson.decode(ARGV[3])
local new = {}
for target, m in pairs(metas) do
  redis.call('HSET', P .. 'targets', target, cjson.encode(m))
  if redis.call('SADD', P .. 'targets:known', target) == 1 then
    local backfill = redis.call('SCARD', P .. 'blocked') > 0
    if backfill then redis.call('HSET', P .. 'backfill', target, '0') end
    table.insert(new, {target, backfill})
  end
end
return cjson.encode(new)
