-- Put items taken from a queue back at its head, in their order (a batch get that timed
-- out before it had all it asked for loses nothing).
-- KEYS[1]  items: list
-- ARGV     the items, oldest first
-- returns  the queue's length afterwards
for i = #ARGV, 1, -1 do
    redis.call("LPUSH", KEYS[1], ARGV[i])
end
return redis.call("LLEN", KEYS[1])
