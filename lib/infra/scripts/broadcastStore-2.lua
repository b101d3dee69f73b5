--[[
  Stores a broadcast once: its record and its index entry together (lib/inapp/broadcasts.ts).

  Input:
    KEYS[1]  the broadcast records: hash id -> JSON        } both share
    KEYS[2]  the broadcast index: sorted set id -> time    } the {bc} hash slot
    ARGV[1]  notification id
    ARGV[2]  record JSON
    ARGV[3]  creation time (ms)

  Returns:
    1 when stored now, 0 when it was stored already (a redelivered notification).
]]
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
