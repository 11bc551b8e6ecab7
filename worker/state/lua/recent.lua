-- A number's audit entries still waiting in `audit:batches` (prelude.lua: audit_flush), from
-- a page of the stream: flat, its last id read, how many it read, then row id, entry JSON,
-- ... oldest first. A row's id is its batch's stream id and its place there (`{id}.{k}`,
-- k from 0), as the archive keys it (worker/state/auditlog.py). Only a batch whose numbers
-- hold the number as text is split.
-- ARGV: prefix, now_ms, number, start (an XRANGE start), count
local n = ARGV[3]
local rows = redis.call('XRANGE', P .. 'audit:batches', ARGV[4], '+', 'COUNT', ARGV[5])
local out = {'', #rows}
-- Empty parts kept, as Python's str.split keeps them: the places must match the drain's.
local function split(s)
  local parts, from = {}, 1
  while true do
    local at = string.find(s, '\n', from, true)
    if not at then
      parts[#parts + 1] = string.sub(s, from)
      return parts
    end
    parts[#parts + 1] = string.sub(s, from, at - 1)
    from = at + 1
  end
end
for _, row in ipairs(rows) do
  local fields, ns, es = row[2], '', ''
  for i = 1, #fields, 2 do
    if fields[i] == 'n' then ns = fields[i + 1] elseif fields[i] == 'e' then es = fields[i + 1] end
  end
  if string.find(ns, n, 1, true) then
    local numbers, entries = split(ns), split(es)
    for k, number in ipairs(numbers) do
      if number == n and entries[k] then
        out[#out + 1] = row[1] .. '.' .. (k - 1)
        out[#out + 1] = entries[k]
      end
    end
  end
  out[1] = row[1]
end
return out
