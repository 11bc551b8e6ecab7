-- Settle a review case: take it off `review:{source}` and record how (accepted, dropped)
-- in `reviewed:{source}` (capped) and `counts:review:{source}`, in one step, so a case is
-- recorded once however often (or by however many operators) it is settled. The record is
-- also an audit entry of its own (no number's: `review`, with who settled it) on its way to
-- the archive: a case dropped opts nobody out, and the evidence of why must outlive the
-- capped `reviewed` list.
-- ARGV: prefix, now_ms, source, the case's exact stored JSON, outcome, record JSON,
--       always ('1': record even when the case is gone already), cap of `reviewed`
local source, raw, outcome = ARGV[3], ARGV[4], ARGV[5]
local always, cap = ARGV[7] == '1', tonumber(ARGV[8])
local removed = redis.call('LREM', P .. 'review:' .. source, 1, raw)
if removed > 0 or always then
  local record = cjson.decode(ARGV[6])
  record.at = NOW
  record.outcome = outcome
  local key = P .. 'reviewed:' .. source
  if redis.call('LPUSH', key, cjson.encode(record)) > cap then
    redis.call('LTRIM', key, 0, cap - 1)
  end
  redis.call('HINCRBY', P .. 'counts:review:' .. source, outcome, 1)
  redis.call('XADD', P .. 'audit:log', '*', 'n', '', 'e', cjson.encode({
    at = NOW, act = 'review', res = outcome, src = source, review = record.id, by = record.by,
    phone = record.phone, call = record.call_id, ev = record.event_id, rsn = record.reason,
    note = record.note}))
end
return removed
