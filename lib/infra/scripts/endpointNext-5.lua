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
    ARGV[3]  history entries kept (0: none; up to a quarter more, at least 16, between trims)
    ARGV[4]  how many queued deliveries to read (0: none, and no state either)
    ARGV[5..] groups of four, head first: delivery id, "delivered" or "failed", HTTP status of its last attempt (0: none), history entry (JSON)

  Returns:
    {finished, paused (1/0), next attempt due (ms, 0: now), attempts made of the head, id, item JSON, id, item JSON, ...}
    (a queued id whose item is gone is dropped from the queue and skipped).
]]
local now = tonumber(ARGV[1])
local cap = tonumber(ARGV[3])
-- The queue's head compared with the ids given, in order: each command below then runs once for all of them.
local given = (#ARGV - 4) / 4
local n = 0
if given > 0 then
  local head = redis.call('LRANGE', KEYS[1], 0, given - 1)
  while n < #head and head[n + 1] == ARGV[5 + n * 4] do n = n + 1 end
end
if n > 0 then
  local ids, scored, history = {}, {}, {}
  local delivered, failed = 0, 0
  for k = 0, n - 1 do
    local i = 5 + k * 4
    ids[#ids + 1] = ARGV[i]
    scored[#scored + 1] = now
    scored[#scored + 1] = ARGV[i]
    history[#history + 1] = ARGV[i + 3]
    if ARGV[i + 1] == 'delivered' then delivered = delivered + 1 else failed = failed + 1 end
  end
  redis.call('LTRIM', KEYS[1], n, -1)
  redis.call('HDEL', KEYS[2], unpack(ids))
  redis.call('ZADD', KEYS[3], unpack(scored))
  if delivered > 0 then redis.call('HINCRBY', KEYS[4], 'delivered', delivered) end
  if failed > 0 then redis.call('HINCRBY', KEYS[4], 'failed', failed) end
  redis.call('HSET', KEYS[4], 'lastStatus', ARGV[5 + (n - 1) * 4 + 2], 'lastAt', ARGV[1])
  -- A delivery that went through ends the failure streak (a failed one leaves it as it was).
  if delivered > 0 then
    redis.call('HSET', KEYS[4], 'consecutive', 0)
    redis.call('HDEL', KEYS[4], 'failingSince', 'lastError', 'attempts', 'nextAt')
  else
    redis.call('HDEL', KEYS[4], 'attempts', 'nextAt')
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[2]))
  -- Trimmed back to `cap` only once a quarter over it: trimming the head moves the whole list, each call.
  if cap > 0 and redis.call('RPUSH', KEYS[5], unpack(history)) > cap + math.max(16, math.floor(cap / 4)) then
    redis.call('LTRIM', KEYS[5], -cap, -1)
  end
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
