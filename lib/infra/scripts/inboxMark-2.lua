--[[
  Applies a user action (seen, read, archive) to inbox items and keeps the unread count.

  Input:
    KEYS[1]     the inbox order: sorted set nid -> time (ms)   } one user: both share
    KEYS[2]     the inbox items hash                           } one {s<shard>} hash slot
    ARGV[1]     state bits to set (SEEN 1, READ 2, ARCHIVED 4; lib/inapp/inbox.ts)
    ARGV[2]     '1': every item of the inbox; '0': the ids in ARGV[3..]
    ARGV[3..]   notification ids

  An item counts as unread until READ or ARCHIVED is set (6 below is READ + ARCHIVED).

  Returns:
    { unread count, ids whose state changed... }
]]
local set = tonumber(ARGV[1])
local ids = {}
if ARGV[2] == '1' then ids = redis.call('ZRANGE', KEYS[1], 0, -1) else for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end end
local changed = {}
local delta = 0
for _, id in ipairs(ids) do
  local s = redis.call('HGET', KEYS[2], '~s:' .. id)
  if s then
    s = tonumber(s)
    local t = bit.bor(s, set)
    if t ~= s then
      if bit.band(s, 6) == 0 and bit.band(t, 6) ~= 0 then delta = delta - 1 end
      redis.call('HSET', KEYS[2], '~s:' .. id, t)
      changed[#changed + 1] = id
    end
  end
end
local u
if delta ~= 0 then u = redis.call('HINCRBY', KEYS[2], '~unread', delta) else u = tonumber(redis.call('HGET', KEYS[2], '~unread') or '0') end
local out = { u }
for _, id in ipairs(changed) do out[#out + 1] = id end
return out
