-- Stage numbers for one target: a backfill step (numbers already there, confirmed, in
-- flight, retrying or dead-lettered are left alone), or a reconcile repair (`force`: the
-- provider was found to lack them, so forget what we thought it held and push again).
-- ARGV: prefix, now_ms, target, numbers JSON, force ('1' or '0')
local target = ARGV[3]
local force = ARGV[5] == '1'
local touched = {}
local staged = 0
for _, n in ipairs(cjson.decode(ARGV[4])) do
  if force then redis.call('HDEL', P .. 'confirmed:' .. target, n) end
  if restage(target, n, force, touched) then staged = staged + 1 end
end
return cjson.encode({staged = staged, summary = staged_summary(touched)})
