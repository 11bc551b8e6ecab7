-- Put dead letters back into their batches; an entry leaves the store only when a push
-- succeeds, so replaying twice stages once and pushes once. One for a target that is not
-- live stays as it is and does not count as replayed: no process would push it (nor does
-- the catch-up when the target is back: a dead letter of the ledger's current state waits
-- for a person), so it is replayed again then, or purged if the target is gone for good.
-- ARGV: prefix, now_ms, ids JSON, who, audit cap
local ids = cjson.decode(ARGV[3])
local who, cap = ARGV[4], tonumber(ARGV[5])
local touched = {}
local replayed = 0
for _, member in ipairs(ids) do
  local raw = redis.call('HGET', P .. 'dlq', member)
  local entry = raw and cjson.decode(raw)
  if entry and not is_live(entry.target) then
    audit(entry.phone, {at = NOW, act = 'replay', prov = entry.target, by = who,
                        rsn = entry.reason, res = 'target_not_live'}, cap)
  elseif entry then
    entry.replays = (entry.replays or 0) + 1
    entry.replayed_at = NOW
    redis.call('HSET', P .. 'dlq', member, cjson.encode(entry))
    redis.call('HDEL', P .. 'fails:' .. entry.target, entry.phone)
    local res = 'staged'
    if not restage(entry.target, entry.phone, true, touched)
        and redis.call('HEXISTS', P .. 'inflight:' .. entry.target, entry.phone) == 0 then
      -- Nothing is left to push there (the ledger moved to what the target holds, or to
      -- what it cannot take): the dead letter is moot, and would never leave otherwise.
      redis.call('HDEL', P .. 'dlq', member)
      redis.call('ZREM', P .. 'dlq:age', member)
      res = 'nothing_to_push'
    end
    audit(entry.phone, {at = NOW, act = 'replay', prov = entry.target, by = who,
                        rsn = entry.reason, res = res}, cap)
    replayed = replayed + 1
  end
end
return cjson.encode({count = replayed, staged = staged_summary(touched)})
