-- Resume a paused provider and record it in the archive (through the stream: an entry of
-- the provider, no number), in one step: a resume is never without its entry.
-- ARGV: prefix, now_ms, provider, who
-- Answers 1 when it was paused, else 0 (and records nothing).
local provider, who = ARGV[3], ARGV[4]
if redis.call('HDEL', P .. 'paused', provider) == 0 then return 0 end
local entry = {at = NOW, prov = provider, act = 'resume'}
if who ~= '' then entry.by = who end
redis.call('XADD', P .. 'audit:log', '*', 'n', '', 'e', cjson.encode(entry))
return 1
