-- Take the scheduler lease: when it is free, or when it is held by ARGV[3] (a holder we
-- know to be dead, e.g. a killed process on this host), compare-and-set.
-- KEYS[1]  lease key
-- ARGV[1]  our holder token
-- ARGV[2]  time to live in milliseconds
-- ARGV[3]  token of a dead holder we may replace ("" for none)
-- returns  1 when we hold the lease now, 0 otherwise
local current = redis.call("GET", KEYS[1])
if current == false or current == ARGV[1] or (ARGV[3] ~= "" and current == ARGV[3]) then
    redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
    return 1
end
return 0
