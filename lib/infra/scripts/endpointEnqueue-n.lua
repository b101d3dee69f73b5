--[[
  Queues deliveries on webhook endpoints, each endpoint's in the order given, skipping any already queued or (unless
  forced) already finished: a redelivered send batch queues nothing twice. One endpoint per call on a Redis Cluster
  (an endpoint's keys share a hash slot), all of a send batch's at once on one redis-server.

  Input:
    KEYS[1..n]  three per endpoint: its queue (list of delivery ids), its queued items (hash id -> JSON), its finished
             ids (sorted set id -> time)
    ARGV[1]  flags: "r" to queue ids even if finished (a dead letter replayed); "f" to queue them at the front of
             their queue, in the order given (deliveries a deliverer hands back), not at the back
    ARGV[2]  the number u of distinct items (one notification's delivery is the same item on every endpoint)
    ARGV[3..2+u]  the items' JSON
    ARGV[3+u..] per endpoint, in KEYS order: the number of its deliveries n, then n pairs: delivery id, item number (1..u)

  Returns:
    how many were queued.
]]
local added = 0
local force, front = string.find(ARGV[1], 'r', 1, true) ~= nil, string.find(ARGV[1], 'f', 1, true) ~= nil
local u = tonumber(ARGV[2])
local a = 3 + u
for e = 1, #KEYS, 3 do
  local queue, items, done = KEYS[e], KEYS[e + 1], KEYS[e + 2]
  local n = tonumber(ARGV[a])
  a = a + 1
  local put = {}
  for _ = 1, n do
    local id = ARGV[a]
    -- HSETNX both checks that it is not queued already and stores its item: one command, not two.
    if (force or not redis.call('ZSCORE', done, id)) and redis.call('HSETNX', items, id, ARGV[2 + tonumber(ARGV[a + 1])]) == 1 then
      put[#put + 1] = id
    end
    a = a + 2
  end
  if #put > 0 then
    if front then
      for k = #put, 1, -1 do redis.call('LPUSH', queue, put[k]) end
    else
      redis.call('RPUSH', queue, unpack(put))
    end
    added = added + #put
  end
end
return added
