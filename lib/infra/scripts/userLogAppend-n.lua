--[[
  Appends entries to users' delivery logs, each log capped and its TTL refreshed. Idempotent: the
  same entry is the same member.

  Input:
    KEYS[1..n]      one user log per entry (sorted set of entry JSON scored by time). The users
                    of one notification may live in different shards: on Redis Cluster the caller
                    passes the logs of one shard per call (lib/tracking/user-log.ts), so they
                    share one {s<shard>} hash slot; on one redis-server any mix.
    ARGV[1]         cap (entries kept per log)
    ARGV[2]         TTL, ms
    ARGV[1+2i],
    ARGV[2+2i]      score (ms) and member (entry JSON) of KEYS[i]

  Returns:
    the number of keys (entries) written.
]]
local cap = tonumber(ARGV[1])
for i, k in ipairs(KEYS) do
  redis.call('ZADD', k, ARGV[1 + 2 * i], ARGV[2 + 2 * i])
  if redis.call('ZCARD', k) > cap then redis.call('ZREMRANGEBYRANK', k, 0, -cap - 1) end
  redis.call('PEXPIRE', k, ARGV[2])
end
return #KEYS
