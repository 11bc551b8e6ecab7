-- The oldest audit entries waiting for the archive, flat: id, number, JSON, id, ... (a
-- script's answer is read as plain lists; XRANGE's reply, made into a dict per entry by
-- the client, cost the drain a third of its CPU).
-- ARGV: prefix, now_ms, start (an XRANGE start: '-' or '(' and an id), count
local rows = redis.call('XRANGE', P .. 'audit:log', ARGV[3], '+', 'COUNT', ARGV[4])
local out = {}
for _, row in ipairs(rows) do
  local fields, n, e = row[2], '', '{}'
  for i = 1, #fields, 2 do
    if fields[i] == 'n' then n = fields[i + 1] elseif fields[i] == 'e' then e = fields[i + 1] end
  end
  out[#out + 1] = row[1]
  out[#out + 1] = n
  out[#out + 1] = e
end
return out
