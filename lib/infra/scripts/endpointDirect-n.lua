--[[
  Takes or renews a gateway process's hold on webhook endpoints for direct delivery (deliveries posted from memory as
  their send batch arrives, without queuing them in Redis). An endpoint is taken only when nothing of it is queued,
  it is not paused, no retry of it is due later, and its lease is free or already the caller's. A renewal extends the
  lease while it is the caller's, and answers whether direct delivery may go on: not when the endpoint was paused
  (by an operator) or has deliveries queued (by another process, or for its event stream), which are delivered
  first once the caller lets go.

  Input:
    KEYS[1..n]  groups of three per endpoint: its lease key, its queue (list of delivery ids), its state (hash)
    ARGV[1]  owner id
    ARGV[2]  lease length (ms)
    ARGV[3]  now (ms)
    ARGV[4]  "take" or "renew"

  Returns:
    one number per endpoint, in order: 1 when the caller holds it for direct delivery (and, renewing, may go on with
    it), else 0.
]]
local owner, ms, now, take = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4] == 'take'
local out = {}
for i = 1, #KEYS, 3 do
  local lease, queue, state = KEYS[i], KEYS[i + 1], KEYS[i + 2]
  local cur = redis.call('GET', lease)
  local g = redis.call('HMGET', state, 'paused', 'nextAt')
  local ok = g[1] ~= '1'
  if take then
    ok = ok and (not cur or cur == owner) and tonumber(g[2] or '0') <= now and redis.call('LLEN', queue) == 0
    if ok then redis.call('SET', lease, owner, 'PX', ms) end
  else
    if cur == owner then redis.call('PEXPIRE', lease, ms) end
    ok = ok and cur == owner and redis.call('LLEN', queue) == 0
  end
  out[#out + 1] = ok and 1 or 0
end
return out
