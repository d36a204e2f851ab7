-- Extend the leases a live holder still has; a lapsed or released one is not revived.
-- KEYS[1]  leases: sorted set, lease id -> expiry (ms)
-- KEYS[2]  tokens: hash, lease id -> fencing token
-- ARGV[1]  lease timeout in ms
-- ARGV[2]  idle time to live of both keys in seconds (0: they have none), renewed too: a
--          lease held for longer than that must not vanish with its keys
-- ARGV[3..] pairs: lease id, fencing token
-- returns  a list with 1 for each lease still held (now extended), 0 for each lost one
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 3, #ARGV, 2 do
    local lease, token = ARGV[i], ARGV[i + 1]
    local expiry = tonumber(redis.call("ZSCORE", KEYS[1], lease) or "0")
    if expiry >= now and redis.call("HGET", KEYS[2], lease) == token then
        redis.call("ZADD", KEYS[1], "XX", now + tonumber(ARGV[1]), lease)
        out[#out + 1] = 1
    else
        out[#out + 1] = 0
    end
end
if tonumber(ARGV[2]) > 0 then
    redis.call("EXPIRE", KEYS[1], ARGV[2])
    redis.call("EXPIRE", KEYS[2], ARGV[2])
end
return out
