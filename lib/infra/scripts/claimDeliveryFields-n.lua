--[[
  Claims the delivery keys of one gateway batch for one attempt: fields of the batch's delivery hashes.

  Input:
    KEYS[1..n]      the batch's delivery hashes (nfx:{s<shard>}:dlv:<nid>|<channel>; one user shard: one hash slot)
    ARGV[1]         this attempt's marker (`~<batchId>#<attempt>`)
    ARGV[2]         claim TTL, seconds
    ARGV[3]         the held marker of this batch id (`~<batchId>`), left by a batch that pushed sends back
    ARGV[4..3+n]    how many fields of each hash follow, hash by hash
    ARGV[4+n..]     the fields (`<user>|<device>`), hash by hash

  A claim or held marker is stored as `<marker>@<deadline>` (ms on Redis's clock); past its deadline it is free.
  Per field: a free one, a lapsed claim or hold, or one held for ARGV[3] is set to `ARGV[1]@<now + TTL>`. Each hash
  lives at least the claim TTL (EXPIRE NX, then GT: never shortened). Two commands per hash (HMGET, HSET), not per field.

  Returns:
    per field in input order: false when this attempt now holds it, else its value (another attempt's live claim or
    hold, or a recorded outcome). One round trip per batch.
]]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local mine = ARGV[1] .. '@' .. (now + ttl * 1000)
local held = ARGV[3]
local k = #KEYS
local out = {}
local p = 4 + k
for h = 1, k do
  local n = tonumber(ARGV[3 + h])
  local key = KEYS[h]
  local set = {}
  -- In slices of 1,000 fields: unpack's stack is bounded.
  for s = p, p + n - 1, 1000 do
    local cur = redis.call('HMGET', key, unpack(ARGV, s, math.min(s + 999, p + n - 1)))
    for i = 1, #cur do
      local v = cur[i]
      local free = not v
      if v and string.byte(v, 1) == 126 then
        local at = string.find(v, '@%d+$')
        free = not at or tonumber(string.sub(v, at + 1)) <= now or string.sub(v, 1, at - 1) == held
      end
      if free then
        out[#out + 1] = false
        set[#set + 1] = ARGV[s + i - 1]
        set[#set + 1] = mine
      else
        out[#out + 1] = v
      end
    end
  end
  for s = 1, #set, 1000 do redis.call('HSET', key, unpack(set, s, math.min(s + 999, #set))) end
  redis.call('EXPIRE', key, ttl, 'NX')
  redis.call('EXPIRE', key, ttl, 'GT')
  p = p + n
end
return out
