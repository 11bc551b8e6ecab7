-- Record each provider target's capabilities; a target seen for the first time gets a
-- backfill cursor so it is filled from the ledger's blocked numbers (design.md step 9).
-- ARGV: prefix, now_ms, metas JSON ({target: {provider, add_only, needs_ctx}})
local metas = cjson.decode(ARGV[3])
local new = {}
for target, m in pairs(metas) do
  redis.call('HSET', P .. 'targets', target, cjson.encode(m))
  if redis.call('SADD', P .. 'targets:known', target) == 1 then
    redis.call('HSET', P .. 'backfill', target, '0')
    table.insert(new, target)
  end
end
return cjson.encode(new)
