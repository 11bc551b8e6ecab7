-- Repair what a reconciliation found, through the pipeline (staged, versioned, pushed like
-- any other change; never a direct call). 'missing': the provider lacks numbers the ledger
-- blocks; what it holds is unknown, so the ledger's state is pushed again. 'extra': the
-- provider holds numbers the ledger did not block when it was read; each is checked again
-- here, at removal time, and one the ledger blocks now is left alone. A number the ledger
-- never held gets an entry that says unblocked (version 1, no remove time: any opt-out,
-- however old, still wins over it) so that its remove is versioned like any other.
-- ARGV: prefix, now_ms, target, numbers JSON, mode ('missing' | 'extra'), who, audit cap
-- Answers {numbers = how many it staged, kept, staged} (records.py: Repaired).
local target, mode, who, cap = ARGV[3], ARGV[5], ARGV[6], tonumber(ARGV[7])
local touched = {}
local staged, kept = 0, 0
for _, n in ipairs(cjson.decode(ARGV[4])) do
  local key = P .. 'num:' .. n
  local led = redis.call('HMGET', key, 's', 'rs', 'src')
  local state = led[1]
  if mode == 'extra' and target_state(target, state, led[2] or led[3]) == 'blocked' then
    kept = kept + 1  -- blocked since the ledger was read: it stays
  else
    if mode == 'extra' then
      if not state then
        redis.call('HSET', key, 's', 'unblocked', 'v', 1, 'bl', '[]', 'e', 'reconcile',
                   'src', 'reconcile', 'u', int(NOW))
      end
      audit(n, {at = NOW, ev = 'reconcile', act = 'reconcile', res = 'extra', prov = target,
                by = who}, cap)
    end
    confirm(target, n, UNKNOWN)
    if restage(target, n, true, touched) then staged = staged + 1 end
  end
end
return cjson.encode({numbers = staged, kept = kept, staged = staged_summary(touched)})
