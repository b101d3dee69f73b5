--[[
  Finishes the delivery at the head of one webhook endpoint's queue: removes it, remembers its id as finished,
  counts it, resets or keeps the failure streak, and appends it to the endpoint's recent history. Only the head is
  settled, so a delivery settled twice (a retried call) counts once.

  Input:
    KEYS[1]  the endpoint's queue (list of delivery ids)
    KEYS[2]  its queued items (hash id -> JSON)
    KEYS[3]  its finished ids (sorted set id -> time)
    KEYS[4]  its state (hash)
    KEYS[5]  its recent history (list of JSON)
    ARGV[1]  delivery id
    ARGV[2]  "delivered" or "failed"
    ARGV[3]  now (ms)
    ARGV[4]  HTTP status of the last attempt (0: none)
    ARGV[5]  how long finished ids are remembered (ms)
    ARGV[6]  history entries kept (0: none)
    ARGV[7]  the history entry (JSON)

  Returns:
    1 when the head was settled, 0 when it was not the head (already settled).
]]
if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[1] then return 0 end
local now = tonumber(ARGV[3])
redis.call('LPOP', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[5]))
redis.call('HINCRBY', KEYS[4], ARGV[2], 1)
redis.call('HSET', KEYS[4], 'lastStatus', ARGV[4], 'lastAt', ARGV[3])
redis.call('HDEL', KEYS[4], 'attempts', 'nextAt')
if ARGV[2] == 'delivered' then
  redis.call('HSET', KEYS[4], 'consecutive', 0)
  redis.call('HDEL', KEYS[4], 'failingSince', 'lastError')
end
local cap = tonumber(ARGV[6])
if cap > 0 then
  redis.call('RPUSH', KEYS[5], ARGV[7])
  redis.call('LTRIM', KEYS[5], -cap, -1)
end
return 1
