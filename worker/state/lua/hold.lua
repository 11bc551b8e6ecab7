-- Hold a provider for every worker until a Retry-After has passed (the later end wins).
-- ARGV: prefix, now_ms, provider, hold ms
return hold_until(ARGV[3], NOW + tonumber(ARGV[4]))
