-- Renew the scheduler lease if we still hold it (compare-and-expire).
-- KEYS[1]  lease key
-- ARGV[1]  holder token
-- ARGV[2]  time to live in milliseconds
-- returns  1 when renewed, 0 when the lease is held by someone else or expired
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0
