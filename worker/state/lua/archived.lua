-- Forget audit entries of `audit:log` the archive has committed: each leaves the stream and
-- its number's tail `audit:{e164}` (the exact value the release before's audit_raw pushed,
-- as an old process of a rolling upgrade still does: the entry with its stream id spliced
-- in; a provider's entry has no number and no tail). The drain passes each entry as it
-- read it from the stream (id, number, JSON): a stream entry never changes, and looking
-- each up again cost Redis a third of the cleanup. An entry already gone (a drain that ran
-- twice) is skipped. A tail that loses its last entry goes with it.
-- ARGV: prefix, now_ms, entries JSON ([id, number, JSON] each)
-- Answers how many entries left the stream.
local log = P .. 'audit:log'
local removed = 0
for _, entry in ipairs(cjson.decode(ARGV[3])) do
  local id, n, e = entry[1], entry[2], entry[3]
  if redis.call('XDEL', log, id) == 1 then
    removed = removed + 1
    if n ~= '' then
      redis.call('LREM', P .. 'audit:' .. n, 1, '{"id":"' .. id .. '",' .. string.sub(e, 2))
    end
  end
end
return removed
