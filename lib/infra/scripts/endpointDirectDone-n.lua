--[[
  Records the deliveries a gateway process posted directly (not through the queue) to webhook endpoints: counts, the
  last answer, the failure streak ended by a delivery that went through, and the recent history.

  Input:
    KEYS[1..n]  pairs per endpoint: its state (hash), its recent history (list of JSON)
    ARGV[1]  now (ms)
    ARGV[2]  history entries kept (0: none; up to a quarter more, at least 16, between trims)
    ARGV[3..] per endpoint, in KEYS order: delivered, failed, HTTP status of the last answer, number of history
             entries, then those entries (JSON, oldest first)

  Returns:
    the number of endpoints recorded.
]]
local now, cap = ARGV[1], tonumber(ARGV[2])
local a = 3
for i = 1, #KEYS, 2 do
  local state, hist = KEYS[i], KEYS[i + 1]
  local delivered, failed, n = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 3])
  if delivered > 0 then
    redis.call('HINCRBY', state, 'delivered', delivered)
    redis.call('HSET', state, 'consecutive', 0)
    redis.call('HDEL', state, 'failingSince', 'lastError')
  end
  if failed > 0 then redis.call('HINCRBY', state, 'failed', failed) end
  redis.call('HSET', state, 'lastStatus', ARGV[a + 2], 'lastAt', now)
  -- Trimmed back to `cap` only once a quarter over it: trimming the head moves the whole list, each call.
  if cap > 0 and n > 0 and redis.call('RPUSH', hist, unpack(ARGV, a + 4, a + 3 + n)) > cap + math.max(16, math.floor(cap / 4)) then
    redis.call('LTRIM', hist, -cap, -1)
  end
  a = a + 4 + n
end
return (#KEYS) / 2
