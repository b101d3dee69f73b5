--[[
  Claims the delivery keys of one gateway batch for one attempt.

  Input:
    KEYS[1..n]  the batch's delivery keys (one user shard: all share one {s<shard>} hash slot)
    ARGV[1]     this attempt's marker (`~<batchId>#<attempt>`)
    ARGV[2]     claim TTL, seconds
    ARGV[3]     the held marker of this batch id (`~<batchId>`), left by a batch that pushed sends back

  Per key: a free key, or one holding ARGV[3], is set to ARGV[1] with TTL ARGV[2]. A free key takes one command
  (SET NX GET, Redis 7.0 or later); a key holding ARGV[3] a second.

  Returns:
    per key, its value before the call (false/nil when it was free). One round trip per batch.
]]
local out = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('SET', k, ARGV[1], 'NX', 'GET', 'EX', ARGV[2])
  if v == ARGV[3] then redis.call('SET', k, ARGV[1], 'EX', ARGV[2]) end
  out[i] = v
end
return out
