--[[
  One step of a webhook endpoint's delivery, in one call: finishes the deliveries given (at the head of its queue, in
  order), then reads what the deliverer needs next: whether the endpoint is paused, when its head delivery is due,
  the attempts made of it, and the first deliveries of the queue.

  Finishing: each is removed, remembered as finished, counted, resets or keeps the failure streak, and is appended to
  the endpoint's recent history. Only the head is finished, so a delivery finished twice (a retried call) counts
  once; finishing stops at the first id that is not the head.

  Input:
    KEYS[1]  the endpoint's queue (list of delivery ids)
    KEYS[2]  its queued items (hash id -> JSON)
    KEYS[3]  its finished ids (sorted set id -> time)
    KEYS[4]  its state (hash)
    KEYS[5]  its recent history (list of JSON)
    ARGV[1]  now (ms)
    ARGV[2]  how long finished ids are remembered (ms)
    ARGV[3]  history entries kept (0: none)
    ARGV[4]  how many queued deliveries to read (0: none, and no state either)
    ARGV[5..] groups of four, head first: delivery id, "delivered" or "failed", HTTP status of its last attempt (0: none), history entry (JSON)

  Returns:
    {finished, paused (1/0), next attempt due (ms, 0: now), attempts made of the head, id, item JSON, id, item JSON, ...}
    (a queued id whose item is gone is dropped from the queue and skipped).
]]
local now = tonumber(ARGV[1])
local cap = tonumber(ARGV[3])
local n = 0
for i = 5, #ARGV, 4 do
  local id, outcome = ARGV[i], ARGV[i + 1]
  if redis.call('LINDEX', KEYS[1], 0) ~= id then break end
  redis.call('LPOP', KEYS[1])
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZADD', KEYS[3], now, id)
  redis.call('HINCRBY', KEYS[4], outcome, 1)
  redis.call('HSET', KEYS[4], 'lastStatus', ARGV[i + 2], 'lastAt', ARGV[1])
  if outcome == 'delivered' then
    redis.call('HSET', KEYS[4], 'consecutive', 0)
    redis.call('HDEL', KEYS[4], 'failingSince', 'lastError')
  end
  if cap > 0 then redis.call('RPUSH', KEYS[5], ARGV[i + 3]) end
  n = n + 1
end
if n > 0 then
  redis.call('HDEL', KEYS[4], 'attempts', 'nextAt')
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[2]))
  if cap > 0 then redis.call('LTRIM', KEYS[5], -cap, -1) end
end
local max = tonumber(ARGV[4])
if max == 0 then return {n, 0, 0, 0} end
local g = redis.call('HMGET', KEYS[4], 'paused', 'nextAt', 'attempts')
local out = {n, g[1] == '1' and 1 or 0, tonumber(g[2] or '0'), tonumber(g[3] or '0')}
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, max - 1)) do
  local item = redis.call('HGET', KEYS[2], id)
  if item then
    out[#out + 1] = id
    out[#out + 1] = item
  else
    redis.call('LREM', KEYS[1], 1, id)
  end
end
return out
