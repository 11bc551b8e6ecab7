-- Drop dead letters an operator gave up on, leaving a line in each number's audit trail.
-- ARGV: prefix, now_ms, ids JSON, who, audit cap
local ids = cjson.decode(ARGV[3])
local who, cap = ARGV[4], tonumber(ARGV[5])
local purged = 0
for _, member in ipairs(ids) do
  local raw = redis.call('HGET', P .. 'dlq', member)
  if raw then
    local entry = cjson.decode(raw)
    redis.call('HDEL', P .. 'dlq', member)
    redis.call('ZREM', P .. 'dlq:age', member)
    -- Nothing pushes the number there again until it changes: a late mark whose time has
    -- passed would stay for good (one still running is kept for that next push).
    for _, key in ipairs({P .. 'late:' .. entry.target, P .. 'latesib:' .. entry.provider}) do
      if tonumber(redis.call('HGET', key, entry.phone) or '0') < NOW then
        redis.call('HDEL', key, entry.phone)
      end
    end
    audit(entry.phone, {at = NOW, act = 'purge', prov = entry.target, by = who,
                        rsn = entry.reason}, cap)
    purged = purged + 1
  end
end
return purged
