-- One HSCAN step over the specs hash, keeping only the start of each spec: the scheduler
-- counts which function each spec names without moving the specs themselves.
-- KEYS[1]  the specs hash
-- ARGV[1]  the HSCAN cursor; ARGV[2] its COUNT
-- returns  {next cursor, key1, head1, key2, head2, ...}, each head the first 19 bytes
local reply = redis.call("HSCAN", KEYS[1], ARGV[1], "COUNT", ARGV[2])
local out = {reply[1]}
local pairs_ = reply[2]
for i = 1, #pairs_, 2 do
    out[#out + 1] = pairs_[i]
    out[#out + 1] = string.sub(pairs_[i + 1], 1, 19)
end
return out
