--[[
  Claims one notification's collapse key for the users of one fan chunk (the shard actor, before it decides the chunk).

  Input:
    KEYS[1..n]  the users' collapse-key keys (one user shard: all share one {s<shard>} hash slot)
    ARGV[1]     the notification id claiming them
    ARGV[2]     how long a claim lasts, milliseconds (the dedup window)

  Per key: a free key is set to ARGV[1] for ARGV[2] ms.

  Returns:
    per key, 1 when it is held by ARGV[1] (claimed now, or by an earlier decision of the same notification), 0 when
    another notification holds it. One round trip per chunk.
]]
local out = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if not v then redis.call('SET', k, ARGV[1], 'PX', ARGV[2]); out[i] = 1
  elseif v == ARGV[1] then out[i] = 1
  else out[i] = 0 end
end
return out
