-- Release the scheduler lease if we hold it (compare-and-delete).
-- KEYS[1]  lease key
-- ARGV[1]  holder token
-- returns  1 when released, 0 otherwise
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("DEL", KEYS[1])
end
return 0
