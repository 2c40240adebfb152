-- Redis Cluster: renew node ARGV[1]'s lease for ARGV[2] ms and claim the reaping of the
-- nodes whose lease ran out. KEYS: P:{P}:nodes, P:{P}:reaping (node -> claim expiry).
-- A dead node is moved from the leases to the claims, for one lease: the caller reaps
-- its shares app by app (reap_share.lua) and then drops the claim. A claim that ran out
-- (its reaper died too) is claimed again, by whoever beats next. Returns the claimed.
-- A node that is itself being reaped does not renew its lease: returns false (it
-- registers again once the claim is gone, cluster_rejoin.lua).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
local claim = redis.call('ZSCORE', KEYS[2], ARGV[1])
if claim and tonumber(claim) > now then return false end
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
local claimed = {}
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  redis.call('ZREM', KEYS[1], node)
  table.insert(claimed, node)
end
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  if node ~= ARGV[1] then table.insert(claimed, node) end
end
for _, node in ipairs(claimed) do redis.call('ZADD', KEYS[2], now + lease, node) end
return claimed
