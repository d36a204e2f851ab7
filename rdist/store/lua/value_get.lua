-- Read a watched value, or where to start waiting for it to change.
-- KEYS[1]  the value; KEYS[2] its changes stream
-- returns  {1, value}     it is set
--          {0, last id}   it is not: wait for a change after `last id`
local value = redis.call("GET", KEYS[1])
if value then
    return {1, value}
end
local last = redis.call("XREVRANGE", KEYS[2], "+", "-", "COUNT", 1)
if #last > 0 then
    return {0, last[1][1]}
end
return {0, "0-0"}
