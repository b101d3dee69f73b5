--[[
  Lists the next ids of a shard's user index and keeps those active since a time, in one round trip.

  Input:
    KEYS[1]  the shard's user index (sorted set, score 0)       } one shard: both share
    KEYS[2]  the shard's last activity (hash user -> ms)         } one {s<shard>} hash slot
    ARGV[1]  lower bound, ZRANGEBYLEX form ('-' or '(<id>')
    ARGV[2]  upper bound, ZRANGEBYLEX form ('+' or '[<id>')
    ARGV[3]  limit (ids listed)
    ARGV[4]  since (ms): ids active at or after this time are kept

  Returns:
    {} when nothing was listed, else { last id listed, how many were listed, active ids... } in id order.
]]
local ids = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
if #ids == 0 then return {} end
local out = { ids[#ids], #ids }
local since = tonumber(ARGV[4])
for i = 1, #ids, 500 do
  local j = math.min(i + 499, #ids)
  local las = redis.call('HMGET', KEYS[2], unpack(ids, i, j))
  for k = 1, #las do
    if las[k] and tonumber(las[k]) >= since then out[#out + 1] = ids[i + k - 1] end
  end
end
return out
