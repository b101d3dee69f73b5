--[[
  Lists a user's inbox, newest first, archived items skipped.

  Input:
    KEYS[1]  the inbox order: sorted set nid -> time (ms)   } one user: both share
    KEYS[2]  the inbox items hash                           } one {s<shard>} hash slot
    ARGV[1]  before: only items older than this time (ms, exclusive)
    ARGV[2]  limit (items)

  State bits (lib/inapp/inbox.ts): ARCHIVED 4.

  Returns:
    { unread count, item JSON, state bits, item JSON, state bits, ... }
]]
local out = { tonumber(redis.call('HGET', KEYS[2], '~unread') or '0') }
local limit = tonumber(ARGV[2]) * 2
for _, id in ipairs(redis.call('ZREVRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '-inf')) do
  if #out > limit then break end
  local s = tonumber(redis.call('HGET', KEYS[2], '~s:' .. id) or '0')
  if bit.band(s, 4) == 0 then
    local j = redis.call('HGET', KEYS[2], id)
    if j then out[#out + 1] = j; out[#out + 1] = s end
  end
end
return out
