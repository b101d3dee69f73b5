--[[
  Stores an item in a user's in-app inbox unless it is there already (a replayed send), drops the
  oldest items beyond the cap and refreshes the inbox's TTL.

  Input:
    KEYS[1]  the inbox order: sorted set nid -> time (ms)            } one user: both share
    KEYS[2]  the inbox items: hash nid -> item JSON, '~s:<nid>' ->   } one {s<shard>} hash slot
             state bits, '~unread' -> unread count
    ARGV[1]  notification id
    ARGV[2]  time (ms)
    ARGV[3]  item JSON
    ARGV[4]  cap (items kept)
    ARGV[5]  TTL, ms

  State bits (lib/inapp/inbox.ts): SEEN 1, READ 2, ARCHIVED 4, ACKED 8, FALLBACK 16.
  6 below is READ + ARCHIVED: an item with either is not unread.

  Returns:
    'new', or the stored item's live state: 'pending', 'acked' or 'fallback'.
]]
local st = redis.call('HGET', KEYS[2], '~s:' .. ARGV[1])
if st then
  st = tonumber(st)
  if bit.band(st, 8) ~= 0 then return 'acked' end
  if bit.band(st, 16) ~= 0 then return 'fallback' end
  return 'pending'
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3], '~s:' .. ARGV[1], 0)
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HINCRBY', KEYS[2], '~unread', 1)
local n = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
if n > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, n - 1)) do
    local s = tonumber(redis.call('HGET', KEYS[2], '~s:' .. id) or '2')
    if bit.band(s, 6) == 0 then redis.call('HINCRBY', KEYS[2], '~unread', -1) end
    redis.call('HDEL', KEYS[2], id, '~s:' .. id)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - 1)
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 'new'
