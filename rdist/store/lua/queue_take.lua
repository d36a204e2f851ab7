-- Take up to `count` items from the head of a queue (all of them for count <= 0).
-- KEYS[1]  items: list
-- KEYS[2]  space: stream that wakes blocked putters
-- ARGV[1]  count
-- returns  the items taken, oldest first (possibly none)
local count = tonumber(ARGV[1])
local items
if count <= 0 then
    items = redis.call("LRANGE", KEYS[1], 0, -1)
    redis.call("DEL", KEYS[1])
else
    items = redis.call("LRANGE", KEYS[1], 0, count - 1)
    redis.call("LTRIM", KEYS[1], #items, -1)
end
if #items > 0 then
    redis.call("XADD", KEYS[2], "MAXLEN", "~", 100, "*", "m", #items)
end
return items
