--[[
  Moves an inbox item's live-delivery state from pending to acked or fallback; only the first
  transition wins.

  Input:
    KEYS[1]  the user's inbox items hash (one {s<shard>} hash slot)
    ARGV[1]  notification id
    ARGV[2]  the bit to set: ACKED 8 or FALLBACK 16 (lib/inapp/inbox.ts)

  Sets the bit when neither live bit is set yet.

  Returns:
    the state before: 'pending', 'acked', 'fallback', or 'gone' when the item was dropped.
]]
local st = redis.call('HGET', KEYS[1], '~s:' .. ARGV[1])
if not st then return 'gone' end
st = tonumber(st)
if bit.band(st, 8) ~= 0 then return 'acked' end
if bit.band(st, 16) ~= 0 then return 'fallback' end
redis.call('HSET', KEYS[1], '~s:' .. ARGV[1], bit.bor(st, tonumber(ARGV[2])))
return 'pending'
