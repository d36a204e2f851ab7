-- Take one lease of a semaphore (a Lock is a semaphore of one lease), or say how long to
-- wait. Leases whose holder stopped renewing them are dropped first.
-- KEYS[1]  leases: sorted set, lease id -> expiry (ms, Redis clock)
-- KEYS[2]  tokens: hash, lease id -> fencing token
-- KEYS[3]  limit: max leases, set by the first user
-- KEYS[4]  released: stream, one entry per release (waiters block on it)
-- KEYS[5]  fencing: the last fencing token handed out, cluster-wide (never expires, so a
--          token never goes back, not even for a semaphore that vanished while idle)
-- ARGV[1]  lease id (unique per acquisition)
-- ARGV[2]  lease timeout in ms
-- ARGV[3]  max leases the caller expects
-- ARGV[4]  idle time to live of the semaphore's own keys, in seconds
-- returns  {token, ""}      the lease is ours, with a new fencing token
--          {0, last id, ms} full: wait for a release after `last id`, at most `ms`
--          {-1, limit}      the semaphore exists with another max leases
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(redis.call("GET", KEYS[3]) or "0")
if limit == 0 then
    limit = tonumber(ARGV[3])
    redis.call("SET", KEYS[3], limit)
elseif limit ~= tonumber(ARGV[3]) then
    return {-1, tostring(limit)}
end
local lapsed = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", now)
if #lapsed > 0 then
    redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", now)
    redis.call("HDEL", KEYS[2], unpack(lapsed))
end
for i = 1, 4 do
    redis.call("EXPIRE", KEYS[i], ARGV[4])
end
if redis.call("ZCARD", KEYS[1]) >= limit then
    local first = redis.call("ZRANGE", KEYS[1], 0, 0, "WITHSCORES")
    local last = redis.call("XREVRANGE", KEYS[4], "+", "-", "COUNT", 1)
    local last_id = "0-0"
    if #last > 0 then
        last_id = last[1][1]
    end
    return {0, last_id, tostring(tonumber(first[2]) - now)}
end
local token = redis.call("INCR", KEYS[5])
redis.call("ZADD", KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call("HSET", KEYS[2], ARGV[1], token)
return {token, ""}
