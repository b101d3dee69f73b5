--[[
  Removes a device from a user's routing record if it still holds the same token (a re-registered
  token is kept).

  Input:
    KEYS[1]  the user's routing record (msgpack; one key, so one hash slot)
    ARGV[1]  device id
    ARGV[2]  the token the provider reported gone

  Returns:
    how many devices were removed (0 when the user, or the device with that token, is not there).
]]
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local u = cmsgpack.unpack(raw)
if type(u.d) ~= 'table' then return 0 end
local kept, removed = {}, 0
for _, d in ipairs(u.d) do
  if d[1] == ARGV[1] and d[3] == ARGV[2] then removed = removed + 1 else kept[#kept + 1] = d end
end
if removed == 0 then return 0 end
u.d = kept
redis.call('SET', KEYS[1], cmsgpack.pack(u))
return removed
