-- Give back every lock a MultiLock lease holds, if the lease is still the caller's.
-- KEYS[1]  holders: hash, lock name -> lease id
-- KEYS[2]  leases: sorted set, lease id -> expiry (ms)
-- KEYS[3]  tokens: hash, lease id -> fencing token
-- KEYS[4]  released: stream that wakes waiters
-- ARGV[1]  lease id; ARGV[2] its fencing token; ARGV[3..] the lock names it took
-- returns  1 when released, 0 when the lease is not (or no longer) the caller's
if redis.call("HGET", KEYS[3], ARGV[1]) ~= ARGV[2] then
    return 0
end
for i = 3, #ARGV do
    if redis.call("HGET", KEYS[1], ARGV[i]) == ARGV[1] then
        redis.call("HDEL", KEYS[1], ARGV[i])
    end
end
redis.call("ZREM", KEYS[2], ARGV[1])
redis.call("HDEL", KEYS[3], ARGV[1])
redis.call("XADD", KEYS[4], "MAXLEN", "~", 100, "*", "m", ARGV[1])
return 1
