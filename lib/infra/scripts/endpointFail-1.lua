--[[
  Records a failed attempt of the delivery at the head of one webhook endpoint's queue (it will be tried again).

  Input:
    KEYS[1]  the endpoint's state (hash)
    ARGV[1]  now (ms)
    ARGV[2]  when the next attempt is due (ms)
    ARGV[3]  HTTP status (0: no answer)
    ARGV[4]  error text
    ARGV[5]  attempts made of this delivery so far

  Returns:
    {consecutive failed attempts of the endpoint, since when it has been failing (ms)}.
]]
redis.call('HSET', KEYS[1], 'attempts', ARGV[5], 'nextAt', ARGV[2], 'lastStatus', ARGV[3], 'lastError', ARGV[4], 'lastAt', ARGV[1])
redis.call('HSETNX', KEYS[1], 'failingSince', ARGV[1])
local n = redis.call('HINCRBY', KEYS[1], 'consecutive', 1)
return {n, tonumber(redis.call('HGET', KEYS[1], 'failingSince'))}
