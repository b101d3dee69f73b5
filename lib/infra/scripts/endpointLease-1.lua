--[[
  Takes, renews or releases the hold of a gateway process on one webhook endpoint (one deliverer at a time keeps
  its deliveries in order).

  Input:
    KEYS[1]  the endpoint's lease key
    ARGV[1]  owner id
    ARGV[2]  lease length (ms)
    ARGV[3]  "take" (if free or already ours), "renew" (only if ours) or "release" (only if ours)

  Returns:
    1 when the lease is (or, for release, was) ours, else 0.
]]
local cur = redis.call('GET', KEYS[1])
if ARGV[3] == 'take' then
  if cur and cur ~= ARGV[1] then return 0 end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if cur ~= ARGV[1] then return 0 end
if ARGV[3] == 'release' then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
