-- Append one task-stream entry; keep the stream at about ARGV[3] task runs, not entries
-- (an entry is one report batch: one run, or thousands).
-- KEYS[1]  the taskstream stream
-- KEYS[2]  the number of runs it holds (a string counter beside it)
-- ARGV[1]  the payload (field "m"); ARGV[2] the runs it carries (kept as field "n")
-- ARGV[3]  the cap in runs
-- ARGV[4]  the slack: nothing is trimmed until the stream holds cap + slack runs; then the
--          oldest entries go until at most cap remain (one pass per ~slack runs written)
-- returns  the runs the stream holds afterwards
local runs = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local id = redis.call("XADD", KEYS[1], "*", "m", ARGV[1], "n", runs)
local total = redis.call("INCRBY", KEYS[2], runs)
if total <= cap + tonumber(ARGV[4]) then
    return total
end
local kept = nil -- the oldest entry that stays (the new one at the latest)
local start = "-"
local dropped = 0
repeat
    local entries = redis.call("XRANGE", KEYS[1], start, "+", "COUNT", 100)
    for _, entry in ipairs(entries) do
        if entry[1] == id or total - dropped <= cap then
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
if kept == nil or kept == id then
    -- only the new entry is left (also when the counter had drifted above the stream)
    kept, total, dropped = id, runs, 0
end
redis.call("XTRIM", KEYS[1], "MINID", kept)
total = total - dropped
redis.call("SET", KEYS[2], total)
return total
