--[[
  Claims the delivery keys of one gateway batch for one attempt (fields of the batch's delivery hashes), or renews the
  claims the attempt holds.

  Input:
    KEYS[1..n]      the batch's delivery hashes (nfx:{s<shard>}:dlv:<nid>|<channel>; one user shard: one hash slot)
    ARGV[1]         this attempt's marker (`~<batchId>#<attempt>`)
    ARGV[2]         claim TTL, seconds
    ARGV[3]         'claim' or 'renew'
    ARGV[4]         claim: the held marker of this batch id (`~<batchId>`), left by a batch that pushed sends back
    ARGV[5..4+n]    how many fields of each hash follow, hash by hash
    ARGV[5+n..]     the fields (`<user>|<device>`), hash by hash

  A claim or held marker is stored as `<marker>@<deadline>` (ms on Redis's clock); past its deadline it is free.
  claim: a free field, a lapsed claim or hold, or one held for ARGV[4] is set to `ARGV[1]@<now + TTL>`.
  renew: a field holding ARGV[1] (a recorded outcome or another attempt's claim is left alone) gets the deadline
  now + TTL. Each hash written lives at least the TTL from now (EXPIRE NX, then GT: never shortened). Two commands per
  hash (HMGET, HSET), not per field.

  Returns:
    claim: per field in input order, false when this attempt now holds it, else its value (another attempt's live
    claim or hold, or a recorded outcome). renew: how many fields were extended. One round trip per batch.
]]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local mine = ARGV[1] .. '@' .. (now + ttl * 1000)
local renew = ARGV[3] == 'renew'
local held = ARGV[4]
local k = #KEYS
local out = {}
local count = 0
local p = 5 + k
for h = 1, k do
  local n = tonumber(ARGV[4 + h])
  local key = KEYS[h]
  local set = {}
  -- In slices of 1,000 fields: unpack's stack is bounded.
  for s = p, p + n - 1, 1000 do
    local cur = redis.call('HMGET', key, unpack(ARGV, s, math.min(s + 999, p + n - 1)))
    for i = 1, #cur do
      local v = cur[i]
      local take = not v and not renew
      if v and string.byte(v, 1) == 126 then
        local at = string.find(v, '@%d+$')
        local marker = at and string.sub(v, 1, at - 1)
        if renew then take = marker == ARGV[1]
        else take = not at or tonumber(string.sub(v, at + 1)) <= now or marker == held end
      end
      if take then
        set[#set + 1] = ARGV[s + i - 1]
        set[#set + 1] = mine
      end
      if not renew then out[#out + 1] = (not take) and v end
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
if renew then return count end
return out
