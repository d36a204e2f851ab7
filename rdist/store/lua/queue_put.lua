-- Append to a queue unless it is full.
-- KEYS[1]  items: list
-- KEYS[2]  space: stream, one entry per item taken (a full queue's putters block on it)
-- ARGV[1]  max size (0: unbounded); ARGV[2] the encoded item
-- returns  {1}            appended
--          {0, last id}   full: wait for an entry of `space` after `last id`
local limit = tonumber(ARGV[1])
if limit > 0 and redis.call("LLEN", KEYS[1]) >= limit then
    local last = redis.call("XREVRANGE", KEYS[2], "+", "-", "COUNT", 1)
    local last_id = "0-0"
    if #last > 0 then
        last_id = last[1][1]
    end
    return {0, last_id}
end
redis.call("RPUSH", KEYS[1], ARGV[2])
return {1}
