--[[
  Takes one batch of the webhook gateways' receipt outbox to publish: a batch taken earlier whose publisher did not
  finish it within `staleMs` (it crashed or lost Redis) if there is one, else up to `max` entries in order, stored as
  batch `id` until finished (receiptOutboxDone). Forgets taken ids older than `keepMs`.

  Input:
    KEYS[1]  the outbox entries (hash receipt id -> JSON)
    KEYS[2]  the outbox order (list of receipt ids)
    KEYS[3]  receipt ids taken into batches (sorted set id -> time taken)
    KEYS[4]  batches taken, not finished (hash batch id -> JSON array of entries)
    KEYS[5]  when each of them was taken (sorted set batch id -> time)
    ARGV[1]  now (ms)
    ARGV[2]  max entries
    ARGV[3]  id of a new batch
    ARGV[4]  staleMs
    ARGV[5]  keepMs

  Returns:
    {batch id, JSON array of entries}, or an empty array when there is nothing to publish.
]]
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[5]))
local stale = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now - tonumber(ARGV[4]), 'LIMIT', 0, 1)
if #stale > 0 then
  local body = redis.call('HGET', KEYS[4], stale[1])
  if body then
    redis.call('ZADD', KEYS[5], now, stale[1])
    return {stale[1], body}
  end
  redis.call('ZREM', KEYS[5], stale[1])
end
local ids = redis.call('LRANGE', KEYS[2], 0, tonumber(ARGV[2]) - 1)
if #ids == 0 then return {} end
redis.call('LTRIM', KEYS[2], #ids, -1)
local vals = redis.call('HMGET', KEYS[1], unpack(ids))
redis.call('HDEL', KEYS[1], unpack(ids))
local parts = {}
for i = 1, #ids do
  redis.call('ZADD', KEYS[3], now, ids[i])
  if vals[i] then parts[#parts + 1] = vals[i] end
end
if #parts == 0 then return {} end
local body = '[' .. table.concat(parts, ',') .. ']'
redis.call('HSET', KEYS[4], ARGV[3], body)
redis.call('ZADD', KEYS[5], now, ARGV[3])
return {ARGV[3], body}
