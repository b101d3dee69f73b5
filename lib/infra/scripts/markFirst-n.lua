--[[
  Marks first opens and clicks: per key, HSETNX user -> time; the key's TTL is refreshed on each
  first mark.

  Input:
    KEYS[1..n]        engagement hashes (nfx:eng:<kind>:<nid>). These keys carry no hash tag:
                      on Redis Cluster the caller passes the keys of one hash slot per call
                      (lib/tracking/engagement.ts groups a batch by key), on one redis-server
                      a whole batch at once
    ARGV[2i-1],
    ARGV[2i]          user and time (ms) for KEYS[i]
    ARGV[#ARGV]       TTL, ms

  Returns:
    per key, 1 for a first mark, else 0.
]]
local out = {}
for i, k in ipairs(KEYS) do
  out[i] = redis.call('HSETNX', k, ARGV[i * 2 - 1], ARGV[i * 2])
  if out[i] == 1 then redis.call('PEXPIRE', k, ARGV[#ARGV]) end
end
return out
