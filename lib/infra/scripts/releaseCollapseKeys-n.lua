--[[
  Gives back collapse-key claims a notification made for users it was not sent to (suppressed by a later rule).

  Input:
    KEYS[1..n]  the users' collapse-key keys (one user shard: one {s<shard>} hash slot)
    ARGV[1]     the notification id that claimed them

  Per key: deleted when it still holds ARGV[1]; a key another notification holds is left alone.

  Returns:
    the number of keys deleted.
]]
local n = 0
for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then redis.call('DEL', k); n = n + 1 end
end
return n
