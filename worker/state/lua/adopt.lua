-- Index, for a page of blocked numbers, the blocks written before blocks kept their source:
-- taken for one of each source the ledger named behind them (adopt_legacy), and the number
-- indexed in `expiry` by the soonest end of any of them. Code that met such a block kept no
-- per-source end in `expiry` (and a permanent block dropped the number from it), so a
-- source's temporary block under another's permanent one was never seen to end until
-- something touched the number again.
-- ARGV: prefix, now_ms, numbers JSON
local adopted = 0
for _, n in ipairs(cjson.decode(ARGV[3])) do
  local key = P .. 'num:' .. n
  local led = redis.call('HMGET', key, 's', 'bl', 'rs', 'src', 't')
  local raw = led[1] == 'blocked' and decode_blocks(led[2], led[5], led[3]) or {}
  local blocks = adopt_legacy(raw, led[3] or led[4])
  if blocks ~= raw then  -- (the same table back: nothing to adopt)
    local rs = block_sources(blocks, led[3])
    redis.call('HSET', key, 'bl', encode_blocks(blocks, led[5], rs), 'rs', rs)
    local soonest = next_expiry(blocks)
    if soonest then redis.call('ZADD', P .. 'expiry', soonest, n) end
    adopted = adopted + 1
  end
end
return adopted
