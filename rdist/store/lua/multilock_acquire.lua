-- Take `num` of the named locks at once (all or nothing), or say how long to wait.
-- Every MultiLock of a cluster shares these keys: a lock name is held by one lease.
-- KEYS[1]  holders: hash, lock name -> lease id
-- KEYS[2]  leases: sorted set, lease id -> expiry (ms)
-- KEYS[3]  tokens: hash, lease id -> fencing token
-- KEYS[4]  fencing: the last fencing token handed out, cluster-wide (see sem_acquire)
-- KEYS[5]  released: stream, one entry per release
-- ARGV[1]  lease id; ARGV[2] lease timeout (ms); ARGV[3] how many locks are needed
-- ARGV[4..] the lock names
-- returns  {token, name, name, ...}   the locks taken
--          {0, last id, ms}           not enough free: wait after `last id`, at most `ms`
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lapsed = redis.call("ZRANGEBYSCORE", KEYS[2], "-inf", now)
if #lapsed > 0 then
    local gone = {}
    for _, lease in ipairs(lapsed) do
        gone[lease] = true
    end
    local holders = redis.call("HGETALL", KEYS[1])
    for i = 1, #holders, 2 do
        if gone[holders[i + 1]] then
            redis.call("HDEL", KEYS[1], holders[i])
        end
    end
    redis.call("ZREMRANGEBYSCORE", KEYS[2], "-inf", now)
    redis.call("HDEL", KEYS[3], unpack(lapsed))
end
local free = {}
for i = 4, #ARGV do
    if redis.call("HEXISTS", KEYS[1], ARGV[i]) == 0 then
        free[#free + 1] = ARGV[i]
    end
end
local need = tonumber(ARGV[3])
if #free < need then
    local wait = tonumber(ARGV[2])
    local first = redis.call("ZRANGE", KEYS[2], 0, 0, "WITHSCORES")
    if #first > 0 then
        wait = tonumber(first[2]) - now
    end
    local last = redis.call("XREVRANGE", KEYS[5], "+", "-", "COUNT", 1)
    local last_id = "0-0"
    if #last > 0 then
        last_id = last[1][1]
    end
    return {0, last_id, tostring(wait)}
end
local token = redis.call("INCR", KEYS[4])
local out = {token}
for i = 1, need do
    redis.call("HSET", KEYS[1], free[i], ARGV[1])
    out[#out + 1] = free[i]
end
redis.call("ZADD", KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
redis.call("HSET", KEYS[3], ARGV[1], token)
return out
