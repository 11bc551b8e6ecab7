-- Move confirmations kept the old way, a `confirmed:{target}` hash per target, into the
-- numbers' own ledger hashes (prelude.lua: conf_field), a page at a time: an entry there is
-- the newer word (prelude.lua: confirmed), so it overwrites the field. Run by the sweep
-- until no such hash is left; one that an older process of a rolling upgrade writes again
-- is moved the same way.
-- The same for the numbers the ledger blocks, kept the old way in one set, `blocked`: each
-- goes to its bucket (prelude.lua: block_number), first.
-- ARGV: prefix, now_ms, count
-- Answers how many entries it moved (0: nothing left to move).
local count = tonumber(ARGV[3])
local moved = 0
if old_blocked() then
  -- From the start each time: every member read leaves the set, so what is left is unread.
  local cursor = '0'
  repeat
    local page = redis.call('SSCAN', P .. 'blocked', cursor, 'COUNT', count)
    cursor = page[1]
    for _, n in ipairs(page[2]) do
      block_number(n)  -- (takes it out of the old set too)
      moved = moved + 1
    end
  until cursor == '0' or moved >= count
  if moved > 0 then return moved end
end
for _, target in ipairs(redis.call('HKEYS', P .. 'targets')) do
  local legacy = P .. 'confirmed:' .. target
  if redis.call('EXISTS', legacy) == 1 then
    -- From the start each time: every entry read is deleted, so what is left is unread.
    local cursor = '0'
    repeat
      local page = redis.call('HSCAN', legacy, cursor, 'COUNT', count)
      cursor = page[1]
      local entries = page[2]
      for i = 1, #entries, 2 do
        local n = entries[i]
        redis.call('HSET', P .. 'num:' .. n, conf_field(target), pack_conf(entries[i + 1]))
        redis.call('HDEL', legacy, n)
        moved = moved + 1
      end
    until cursor == '0' or moved >= count
    if moved >= count then return moved end
  end
end
return moved
