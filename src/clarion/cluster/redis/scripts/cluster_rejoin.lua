-- Redis Cluster: node ARGV[1] takes a lease of ARGV[2] ms again (after an outage, or
-- after its lease ran out), unless a reaper still holds a claim on it: 0 then (wait and
-- retry), else 1. A claim that ran out is dropped: the node's registration replaces
-- whatever of its shares was not reaped. KEYS: P:{P}:nodes, P:{P}:reaping.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local claim = redis.call('ZSCORE', KEYS[2], ARGV[1])
if claim and tonumber(claim) > now then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
