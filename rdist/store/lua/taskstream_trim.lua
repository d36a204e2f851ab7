-- Keep the task stream at about ARGV[1] task runs, not entries (an entry is one report
-- batch: one run, or thousands). Writers XADD entries with their run count (field "n")
-- and INCRBY the counter themselves; each runs this now and then (every few thousand
-- runs it wrote), so the trimming stays off the report's path.
-- KEYS[1]  the taskstream stream
-- KEYS[2]  the number of runs it holds (a string counter beside it)
-- ARGV[1]  the cap in runs
-- ARGV[2]  the slack: nothing is trimmed until the counter passes cap + slack; then the
--          oldest entries go until at most cap runs remain
-- returns  the runs the stream holds afterwards
local cap = tonumber(ARGV[1])
local total = tonumber(redis.call("GET", KEYS[2]) or "0")
if total <= cap + tonumber(ARGV[2]) then
    return total
end
local kept = nil -- the oldest entry that stays
local start = "-"
local dropped = 0
local entries
repeat
    entries = redis.call("XRANGE", KEYS[1], start, "+", "COUNT", 100)
    for _, entry in ipairs(entries) do
        if total - dropped <= cap then
            kept = entry[1]
            break
        end
        local n = 1 -- (an entry without a count: one run)
        local fields = entry[2]
        for i = 1, #fields, 2 do
            if fields[i] == "n" then
                n = tonumber(fields[i + 1]) or 1
            end
        end
        dropped = dropped + n
    end
    if kept == nil and #entries > 0 then
        start = "(" .. entries[#entries][1]
    end
until kept ~= nil or #entries == 0
if kept == nil then
    -- the whole stream holds fewer runs than the counter said (it was deleted or
    -- trimmed by hand): the counter takes the stream's own count, nothing is dropped
    redis.call("SET", KEYS[2], dropped)
    return dropped
end
redis.call("XTRIM", KEYS[1], "MINID", kept)
return redis.call("DECRBY", KEYS[2], dropped)
