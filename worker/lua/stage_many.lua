-- Stage numbers for one target (a backfill step); numbers already there, confirmed, in
-- flight, retrying or dead-lettered are left as they are.
-- ARGV: prefix, now_ms, target, numbers JSON
local target = ARGV[3]
local touched = {}
local staged = 0
for _, n in ipairs(cjson.decode(ARGV[4])) do
  if restage(target, n, false, touched) then staged = staged + 1 end
end
return cjson.encode({staged = staged, summary = staged_summary(touched)})
