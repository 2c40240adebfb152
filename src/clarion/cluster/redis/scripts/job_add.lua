-- Queue job ARGV[1] (payload ARGV[2]) due in ARGV[4] ms, keeping at most ARGV[3] jobs.
-- KEYS: P:wh:due:Q, P:wh:jobs:Q. Returns how many of the oldest jobs were dropped.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[1])
local dropped = 0
while redis.call('ZCARD', KEYS[1]) > tonumber(ARGV[3]) do
  local oldest = redis.call('ZPOPMIN', KEYS[1])
  redis.call('HDEL', KEYS[2], oldest[1])
  dropped = dropped + 1
end
return dropped
