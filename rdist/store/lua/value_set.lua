-- Set (or, with no value, delete) a value that waiters watch: a Variable or an Event.
-- KEYS[1]  the value (a string)
-- KEYS[2]  changes: stream, one entry per change (waiters block on it)
-- ARGV[1]  the new value, or nothing to delete it
-- returns  the previous value (false when there was none)
local old = redis.call("GET", KEYS[1])
if #ARGV > 0 then
    redis.call("SET", KEYS[1], ARGV[1])
else
    redis.call("DEL", KEYS[1])
end
redis.call("XADD", KEYS[2], "MAXLEN", "~", 10, "*", "m", "1")
return old
