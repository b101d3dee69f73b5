--[[
  Extends the claims an attempt still holds on its batch's delivery keys.

  Input:
    KEYS[1..n]  the batch's delivery keys (one user shard: all share one {s<shard>} hash slot)
    ARGV[1]     this attempt's marker
    ARGV[2]     TTL, seconds

  Only keys still holding ARGV[1] are extended; a recorded outcome or another attempt's claim is left alone.

  Returns:
    how many keys were extended.
]]
local n = 0
for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then redis.call('EXPIRE', k, ARGV[2]); n = n + 1 end
end
return n
