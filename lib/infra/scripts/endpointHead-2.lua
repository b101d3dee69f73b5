--[[
  The first deliveries of one webhook endpoint's queue, in order.

  Input:
    KEYS[1]  the endpoint's queue (list of delivery ids)
    KEYS[2]  its queued items (hash id -> JSON)
    ARGV[1]  how many at most

  Returns:
    a flat array id, item JSON, id, item JSON, ... (an id whose item is gone is dropped from the queue and skipped).
]]
local ids = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local out = {}
for _, id in ipairs(ids) do
  local item = redis.call('HGET', KEYS[2], id)
  if item then
    out[#out + 1] = id
    out[#out + 1] = item
  else
    redis.call('LREM', KEYS[1], 1, id)
  end
end
return out
