--[[
  Which broadcasts reach a user, and the user's own state of each (fan-out on read: lib/inapp/broadcasts.ts).

  Input:
    KEYS[1..n]   every key in the user's {s<shard>} hash slot:
                 KEYS[1]     the user's inbox items hash ('~b:<nid>' -> state bits)
                 KEYS[2..n]  per candidate broadcast, its audience's set in the user's shard:
                             a sorted set of members, or the shard's last-activity hash
    ARGV[1]      user id
    ARGV[2i], ARGV[2i+1]   candidate i (1-based, KEYS[i+1]): notification id, and 'z' (member of
                 the sorted set) or a time in ms (last activity in the hash at or after it)

  Returns:
    { i, state bits, i, state bits, ... } for each candidate whose audience holds the user
    (state bits as in lib/inapp/inbox.ts: SEEN 1, READ 2, ARCHIVED 4; 0 when the user never acted).
]]
local out = {}
local user = ARGV[1]
for i = 2, #KEYS do
  local nid = ARGV[2 * (i - 1)]
  local mode = ARGV[2 * (i - 1) + 1]
  local member
  if mode == 'z' then
    member = redis.call('ZSCORE', KEYS[i], user) ~= false
  else
    local at = redis.call('HGET', KEYS[i], user)
    member = at ~= false and tonumber(at) >= tonumber(mode)
  end
  if member then
    out[#out + 1] = i - 1
    out[#out + 1] = tonumber(redis.call('HGET', KEYS[1], '~b:' .. nid) or '0')
  end
end
return out
