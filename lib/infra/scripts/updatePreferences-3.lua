--[[
  Atomic read-merge-write of a user's routing record (msgpack): opt-out, marketing opt-out, time zone,
  quiet hours and per category, per channel switches; records the change for gateways to re-check, and
  appends it to the user's consent log.

  Input:
    KEYS[1]  the user's routing record (msgpack)                        } one shard: all three
    KEYS[2]  the shard's changed users (sorted set user -> change ms)   } share one {s<shard>}
    KEYS[3]  the user's consent log (list of JSON entries, oldest first) } hash slot
    ARGV[1]  the patch, JSON: { optedOut?, marketingOptOut?, timezone?, quietHours? ([start, end] local
             minutes, or null), categories? }
    ARGV[2]  now (ms)
    ARGV[3]  user id
    ARGV[4]  the consent log entry, JSON (appended as given)

  Returns:
    the updated record (msgpack; read it as a Buffer), or nil when the user does not exist.
]]
local raw = redis.call('GET', KEYS[1])
if not raw then return nil end
local u = cmsgpack.unpack(raw)
local patch = cjson.decode(ARGV[1])
if patch.optedOut == true then u.o = 1 elseif patch.optedOut == false then u.o = nil end
if patch.marketingOptOut == true then u.m = 1 elseif patch.marketingOptOut == false then u.m = nil end
if type(patch.timezone) == 'string' then u.tz = patch.timezone end
if patch.quietHours == cjson.null then u.q = nil elseif type(patch.quietHours) == 'table' then u.q = { patch.quietHours[1], patch.quietHours[2] } end
if patch.categories then
  if type(u.p) ~= 'table' then u.p = {} end
  for cat, chans in pairs(patch.categories) do
    if type(u.p[cat]) ~= 'table' then u.p[cat] = {} end
    for ch, v in pairs(chans) do u.p[cat][ch] = v end
  end
end
local out = cmsgpack.pack(u)
redis.call('SET', KEYS[1], out)
-- Gateways re-check users changed after their sends were decided; entries older than two days are dropped.
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[2]) - 172800000)
redis.call('RPUSH', KEYS[3], ARGV[4])
return out
