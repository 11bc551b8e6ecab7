-- Forget audit entries the archive has committed: each leaves the stream `audit:log` and
-- its number's tail `audit:{e164}` (the exact value prelude.lua's audit_raw pushed: the
-- entry with its stream id spliced in). An entry already gone (a drain that ran twice) is
-- skipped; a tail that loses its last entry goes with it.
-- ARGV: prefix, now_ms, stream ids JSON
-- Answers how many entries left the stream.
local log = P .. 'audit:log'
local removed = 0
for _, id in ipairs(cjson.decode(ARGV[3])) do
  local found = redis.call('XRANGE', log, id, id)
  if #found > 0 then
    local fields, n, e = found[1][2], '', nil
    for i = 1, #fields, 2 do
      if fields[i] == 'n' then n = fields[i + 1] elseif fields[i] == 'e' then e = fields[i + 1] end
    end
    if n ~= '' and e then
      redis.call('LREM', P .. 'audit:' .. n, 1, '{"id":"' .. id .. '",' .. string.sub(e, 2))
    end
    removed = removed + redis.call('XDEL', log, id)
  end
end
return removed
