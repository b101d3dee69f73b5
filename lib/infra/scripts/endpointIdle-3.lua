--[[
  Lets go of a webhook endpoint whose queue ran empty, in one call (one redis-server only: the keys are in different
  hash slots; on a Redis Cluster the gateway does the same in three steps). With its queue empty, the endpoint leaves
  the active set and the caller's lease is released; a delivery queued later marks it active again (queuing adds to
  the active set after the queue). With deliveries waiting, nothing changes.

  Input:
    KEYS[1]  the active set (endpoint ids with deliveries waiting)
    KEYS[2]  the endpoint's queue (list of delivery ids)
    KEYS[3]  the endpoint's lease key
    ARGV[1]  endpoint id
    ARGV[2]  owner id of the caller's lease

  Returns:
    1 when deliveries are waiting (the endpoint stays active, the lease the caller's), 0 when let go.
]]
if redis.call('LLEN', KEYS[2]) > 0 then return 1 end
redis.call('SREM', KEYS[1], ARGV[1])
if redis.call('GET', KEYS[3]) == ARGV[2] then redis.call('DEL', KEYS[3]) end
return 0
