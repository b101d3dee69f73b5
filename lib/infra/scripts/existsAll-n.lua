--[[
  Whether each of many keys exists, in one call (presence keys of one shard's users).

  Input:
    KEYS[1..n]  the keys (presence keys of one shard: all share one {s<shard>} hash slot)
    ARGV        none

  Returns:
    per key, 1 if it exists, else 0.
]]
local out = {}
for i, k in ipairs(KEYS) do out[i] = redis.call('EXISTS', k) end
return out
