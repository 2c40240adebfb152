-- Claim up to ARGV[1] due webhook jobs for ARGV[2] ms. KEYS: P:wh:due:Q, P:wh:jobs:Q.
-- Returns {id, payload, id, payload, ...}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
  local payload = redis.call('HGET', KEYS[2], id)
  if payload then
    table.insert(out, id)
    table.insert(out, payload)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
