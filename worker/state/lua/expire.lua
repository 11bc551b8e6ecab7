-- Lift temporary blocks whose time has come: the ledger says unblocked (by expiry) and every
-- live target is staged to remove, except those whose provider expires blocks natively (a
-- target that is not live catches up from the ledger when it comes back). A source's block
-- that ends while another source's keeps the number blocked changes no state or version,
-- but narrows the sources behind the block (`rs`): every live target is staged again, and
-- one only the ended source was routed to lifts it (target_state, audited as `narrowed`).
-- `expiry` indexes a number by the soonest end of its blocks, so each is seen when it ends.
-- ARGV: prefix, now_ms, max to lift, audit cap
local due = redis.call('ZRANGEBYSCORE', P .. 'expiry', '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[3]))
local cap = tonumber(ARGV[4])
local targets = live_targets()
local touched = {}
local lifted = 0
for _, n in ipairs(due) do
  redis.call('ZREM', P .. 'expiry', n)
  local key = P .. 'num:' .. n
  local led = redis.call('HMGET', key, 's', 'v', 'x', 'bl', 'rs', 'src', 't')
  local blocks = keep_blocks(adopt_legacy(decode_blocks(led[4], led[7], led[5]), led[5] or led[6]),
                             function(b) return b[2] == 0 or b[2] > NOW end)
  local ns, nx = derive(blocks)
  -- A source's temporary block ran out while another's keeps the number blocked: where
  -- only that source was routed, the block is lifted (target_state).
  local rs = ns == 'blocked' and block_sources(blocks, led[5])
  redis.call('HSET', key, 'bl', encode_blocks(blocks, led[7], rs or led[5]))
  local lifted_some = rs and sources_shrank(led[5], rs)
  if rs and rs ~= led[5] then redis.call('HSET', key, 'rs', rs) end
  if lifted_some and ns == led[1] and nx == tonumber(led[3] or '0') then
    audit(n, {at = NOW, ev = 'expiry', act = 'expire', res = 'narrowed', t = NOW,
              v = tonumber(led[2]), x = nx, rs = rs}, cap)
    for _, target in ipairs(targets) do
      restage(target, n, true, touched)
    end
  end
  if ns ~= led[1] or nx ~= tonumber(led[3] or '0') then
    local v = tonumber(led[2]) + 1
    set_state(key, n, ns, nx, v)
    redis.call('HSET', key, 'e', 'expiry')
    if ns == 'unblocked' then
      redis.call('HSET', key, 'xr', '1')
      lifted = lifted + 1
    end
    audit(n, {at = NOW, ev = 'expiry', act = 'expire', res = 'applied', t = NOW, v = v,
              x = nx}, cap)
    for _, target in ipairs(targets) do
      restage(target, n, true, touched)
    end
  end
  if rs then
    local soonest = next_expiry(blocks)
    if soonest then redis.call('ZADD', P .. 'expiry', soonest, n) end
  end
end
return cjson.encode({count = lifted, staged = staged_summary(touched)})
