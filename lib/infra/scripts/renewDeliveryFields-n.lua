--[[
  Extends the claims of one live gateway attempt.

  Input:
    KEYS[1..n]      delivery hashes of one user shard (one hash slot)
    ARGV[1]         the attempt's marker (`~<batchId>#<attempt>`)
    ARGV[2]         claim TTL, seconds
    ARGV[3..2+n]    how many fields of each hash follow, hash by hash
    ARGV[3+n..]     the fields, hash by hash

  Only fields still holding ARGV[1] (as `ARGV[1]@<deadline>`) get the deadline now + TTL (Redis's clock); a recorded
  outcome or another attempt's claim is left alone. Each hash lives at least the TTL from now.

  Returns:
    how many fields were extended.
]]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local prefix = ARGV[1] .. '@'
local mine = prefix .. (now + ttl * 1000)
local k = #KEYS
local p = 3 + k
local count = 0
for h = 1, k do
  local n = tonumber(ARGV[2 + h])
  local key = KEYS[h]
  local set = {}
  for s = p, p + n - 1, 1000 do
    local cur = redis.call('HMGET', key, unpack(ARGV, s, math.min(s + 999, p + n - 1)))
    for i = 1, #cur do
      local v = cur[i]
      if v and string.sub(v, 1, #prefix) == prefix and string.find(v, '^@%d+$', #prefix) then
        set[#set + 1] = ARGV[s + i - 1]
        set[#set + 1] = mine
      end
    end
  end
  for s = 1, #set, 1000 do redis.call('HSET', key, unpack(set, s, math.min(s + 999, #set))) end
  count = count + #set / 2
  if #set > 0 then
    redis.call('EXPIRE', key, ttl, 'NX')
    redis.call('EXPIRE', key, ttl, 'GT')
  end
  p = p + n
end
return count
