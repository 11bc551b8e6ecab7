-- Give the audit stream the entries a number's tail `audit:{e164}` holds without an id: the
-- release before the archive wrote every entry there only, and so does an old process
-- during a rolling upgrade. Nothing else would ever archive them (the drains read the
-- stream alone), and the first backlog longer than the cap would trim them away. Each is
-- appended to the stream, oldest first, and rewritten in place with its stream id spliced
-- in, exactly as the release before's audit_raw wrote one, so archived.lua forgets it the
-- same way.
-- ARGV: prefix, now_ms, numbers JSON (those whose tail a SCAN found)
-- Answers how many entries it gave the stream.
local given = 0
for _, n in ipairs(cjson.decode(ARGV[3])) do
  local key = P .. 'audit:' .. n
  local entries = redis.call('LRANGE', key, 0, -1)
  for i = #entries, 1, -1 do
    local e = entries[i]
    -- An object with fields, not one of ours with its id already.
    if string.sub(e, 1, 2) == '{"' and string.sub(e, 1, 7) ~= '{"id":"' then
      local id = redis.call('XADD', P .. 'audit:log', '*', 'n', n, 'e', e)
      redis.call('LSET', key, i - 1, '{"id":"' .. id .. '",' .. string.sub(e, 2))
      given = given + 1
    end
  end
end
return given
