--[[
  Queues deliveries on webhook endpoints, each endpoint's in the order given, skipping any already queued or (unless
  forced) already finished: a redelivered send batch queues nothing twice. One endpoint per call on a Redis Cluster
  (an endpoint's keys share a hash slot), all of a send batch's at once on one redis-server.

  Input:
    KEYS[1..n]  three per endpoint: its queue (list of delivery ids), its queued items (hash id -> JSON), its finished
             ids (sorted set id -> time)
    ARGV[1]  "1" to queue ids even if finished (a dead letter replayed), else "0"
    ARGV[2]  the number u of distinct items (one notification's delivery is the same item on every endpoint)
    ARGV[3..2+u]  the items' JSON
    ARGV[3+u..] per endpoint, in KEYS order: the number of its deliveries n, then n pairs: delivery id, item number (1..u)

  Returns:
    how many were queued.
]]
local added = 0
local u = tonumber(ARGV[2])
local a = 3 + u
for e = 1, #KEYS, 3 do
  local queue, items, done = KEYS[e], KEYS[e + 1], KEYS[e + 2]
  local n = tonumber(ARGV[a])
  a = a + 1
  for _ = 1, n do
    local id = ARGV[a]
    -- HSETNX both checks that it is not queued already and stores its item: one command, not two.
    if (ARGV[1] == '1' or not redis.call('ZSCORE', done, id)) and redis.call('HSETNX', items, id, ARGV[2 + tonumber(ARGV[a + 1])]) == 1 then
      redis.call('RPUSH', queue, id)
      added = added + 1
    end
    a = a + 2
  end
end
return added
