--[[
  Queues deliveries on one webhook endpoint, in the order given, skipping any already queued or (unless forced)
  already finished: a redelivered send batch queues nothing twice.

  Input:
    KEYS[1]  the endpoint's queue (list of delivery ids)
    KEYS[2]  its queued items (hash id -> JSON)
    KEYS[3]  its finished ids (sorted set id -> time)
    ARGV[1]  "1" to queue ids even if finished (a dead letter replayed), else "0"
    ARGV[2..] pairs: delivery id, item JSON

  Returns:
    how many were queued.
]]
local added = 0
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('HEXISTS', KEYS[2], id) == 0 and (ARGV[1] == '1' or not redis.call('ZSCORE', KEYS[3], id)) then
    redis.call('HSET', KEYS[2], id, ARGV[i + 1])
    redis.call('RPUSH', KEYS[1], id)
    added = added + 1
  end
end
return added
