--[[
  Sets many fields of one delivery hash to one value: the recipients of one email request (one recorded outcome),
  or the sends a batch pushed back (a held marker, which gets its deadline here on Redis's clock).

  Input:
    KEYS[1]     a delivery hash (nfx:{s<shard>}:dlv:<nid>|<channel>)
    ARGV[1]     the value (not empty)
    ARGV[2]     TTL, seconds: the hash lives at least this long from now (EXPIRE NX, then GT: never shortened)
    ARGV[3]     '1': the value is a marker, stored as `ARGV[1]@<now + TTL in ms>`; '0': stored as given
    ARGV[4..]   the fields

  Returns:
    how many fields were set. The value is sent once, not once per field.
]]
local ttl = tonumber(ARGV[2])
local v = ARGV[1]
if ARGV[3] == '1' then
  local t = redis.call('TIME')
  v = v .. '@' .. (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + ttl * 1000)
end
local set = {}
for i = 4, #ARGV do
  set[#set + 1] = ARGV[i]
  set[#set + 1] = v
end
for s = 1, #set, 1000 do redis.call('HSET', KEYS[1], unpack(set, s, math.min(s + 999, #set))) end
redis.call('EXPIRE', KEYS[1], ttl, 'NX')
redis.call('EXPIRE', KEYS[1], ttl, 'GT')
return #set / 2
