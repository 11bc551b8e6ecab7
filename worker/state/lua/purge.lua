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
    -- The failure it answered is in the audit trail; nothing will replace it now.
    redis.call('HDEL', P .. 'answer:' .. entry.target, entry.phone)
    -- Nothing pushes the number there again until it changes: a late mark whose time has
    -- passed would stay for good (one still running is kept for that next push, and one a
    -- push in flight still needs).
    for _, key in ipairs({'late:' .. entry.target, 'latesib:' .. entry.provider}) do
      local raw_until = redis.call('HGET', P .. key, entry.phone)
      local until_ms = tonumber(raw_until or '0')
      if raw_until and until_ms < NOW and late_mark_spent(key, entry.phone, until_ms) then
        redis.call('HDEL', P .. key, entry.phone)
      end
    end
    audit(entry.phone, {at = NOW, act = 'purge', prov = entry.target, by = who,
                        rsn = entry.reason}, cap)
    purged = purged + 1
  end
end
return purged
