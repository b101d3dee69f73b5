--[[
  Writes the presence of users held by one WebSocket gateway: each user's hash names the gateway with its connection
  count, and lives ttl ms more (a gateway that stops refreshing drops out).

  Input:
    KEYS[1..n]     presence hashes of one user shard (all share one {s<shard>} hash slot)
    ARGV[1]        the gateway's id (the hash field)
    ARGV[2]        TTL in milliseconds
    ARGV[2+i]      the connection count of KEYS[i] here

  Returns:
    n. One call per shard, instead of an HSET and a PEXPIRE per user (a refresh of 15,000 users was 30,000 commands).
]]
local g, ttl = ARGV[1], ARGV[2]
for i = 1, #KEYS do
  redis.call('HSET', KEYS[i], g, ARGV[2 + i])
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return #KEYS
