-- Give a lease back, but only the holder's own: a stale holder (its lease lapsed and may
-- have been handed to someone else since) is refused.
-- KEYS[1]  leases: sorted set, lease id -> expiry (ms)
-- KEYS[2]  tokens: hash, lease id -> fencing token
-- KEYS[3]  released: stream that wakes waiters
-- ARGV[1]  lease id
-- ARGV[2]  its fencing token
-- returns  1 when released, 0 when the lease is not (or no longer) the caller's
local token = redis.call("HGET", KEYS[2], ARGV[1])
if not token or token ~= ARGV[2] then
    return 0
end
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = tonumber(redis.call("ZSCORE", KEYS[1], ARGV[1]) or "0")
redis.call("ZREM", KEYS[1], ARGV[1])
redis.call("HDEL", KEYS[2], ARGV[1])
redis.call("XADD", KEYS[3], "MAXLEN", "~", 100, "*", "m", ARGV[1])
if expiry < now then
    return 0
end
return 1
