-- A catch-up step for one target (a target that became live): stage the ledger's state for
-- numbers it does not hold yet; numbers confirmed at that state, in flight, retrying or
-- dead-lettered are left alone.
-- ARGV: prefix, now_ms, target, numbers JSON
-- Answers {count = how many it staged, staged} (records.py: Tally).
local target = ARGV[3]
local touched = {}
local staged = 0
for _, n in ipairs(cjson.decode(ARGV[4])) do
  if restage(target, n, false, touched) then staged = staged + 1 end
end
return cjson.encode({count = staged, staged = staged_summary(touched)})
