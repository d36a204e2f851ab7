-- Publish a dataset: set it unless it exists and the caller does not override it.
-- KEYS[1]  datasets: hash, name -> encoded value
-- ARGV[1]  name; ARGV[2] the encoded value; ARGV[3] "1" to override an existing one
-- returns  {1, old value or false}   published (the old value is the caller's to release)
--          {0, false}                 the name exists and was kept
local old = redis.call("HGET", KEYS[1], ARGV[1])
if old and ARGV[3] ~= "1" then
    return {0, false}
end
redis.call("HSET", KEYS[1], ARGV[1], ARGV[2])
return {1, old}
