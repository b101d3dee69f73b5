--[[
  Writes the delivery keys a gateway learned about in one event-loop turn: recorded outcomes, held markers, deletions.

  Input, per key its own value:
    KEYS[1..n]     delivery keys of one user shard (all share one {s<shard>} hash slot)
    ARGV[1..n]     per key, its new value; an empty string deletes the key (a dead-lettered send's claim)
    ARGV[n+1..2n]  per key, its TTL in seconds (ignored for a deletion)
  or, one value for every key (the recipients of one email request):
    ARGV[1]        the value of every key (not empty)
    ARGV[2]        their TTL in seconds

  Returns:
    n. One round trip per shard and turn, instead of one command per key.
]]
local n = #KEYS
if #ARGV == 2 and n > 1 then
  for i = 1, n do redis.call('SET', KEYS[i], ARGV[1], 'EX', ARGV[2]) end
  return n
end
for i = 1, n do
  local v = ARGV[i]
  if v == '' then redis.call('DEL', KEYS[i]) else redis.call('SET', KEYS[i], v, 'EX', ARGV[n + i]) end
end
return n
