--[[
  Applies a user action (seen, read, archive) to broadcasts in the user's inbox: the user's state of a
  broadcast is the only thing stored per user, and only once the user acts (lib/inapp/broadcasts.ts).

  Input:
    KEYS[1]     the user's inbox items hash (one {s<shard>} hash slot); '~b:<nid>' -> state bits
    ARGV[1]     state bits to set (SEEN 1, READ 2, ARCHIVED 4; lib/inapp/inbox.ts)
    ARGV[2]     TTL of the hash, ms (the inbox retention)
    ARGV[3..]   notification ids of broadcasts that reach the user (checked by the caller)

  Returns:
    { ids whose state changed... }
]]
local set = tonumber(ARGV[1])
local changed = {}
for i = 3, #ARGV do
  local f = '~b:' .. ARGV[i]
  local s = tonumber(redis.call('HGET', KEYS[1], f) or '0')
  local t = bit.bor(s, set)
  if t ~= s then
    redis.call('HSET', KEYS[1], f, t)
    changed[#changed + 1] = ARGV[i]
  end
end
if #changed > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return changed
