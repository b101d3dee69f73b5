--[[
  Adds receipt entries to the webhook gateways' receipt outbox, each once: an entry whose id is already waiting, or
  was taken into a batch within the last `reported` period, is skipped (a delivery redone after a crash between
  recording its outcome and finishing it in its queue counts once).

  Input:
    KEYS[1]  the outbox entries (hash receipt id -> JSON)
    KEYS[2]  the outbox order (list of receipt ids)
    KEYS[3]  receipt ids taken into batches (sorted set id -> time taken)
    ARGV[1..] pairs: receipt id, entry JSON

  Returns:
    how many were added.
]]
local added = 0
for i = 1, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('HSETNX', KEYS[1], id, ARGV[i + 1]) == 1 then
    if redis.call('ZSCORE', KEYS[3], id) then
      redis.call('HDEL', KEYS[1], id)
    else
      redis.call('RPUSH', KEYS[2], id)
      added = added + 1
    end
  end
end
return added
