-- Queue job ARGV[1] (payload ARGV[2]) due in ARGV[4] ms, keeping at most ARGV[3] jobs
-- and ARGV[5] bytes of payloads. KEYS: P:wh:due:Q, P:wh:jobs:Q. The jobs hash keeps the
-- payloads' total in its field "bytes" (job ids are hex: no clash). A job that is there
-- already (a retry) has its payload replaced. Returns how many events the oldest jobs
-- dropped to make room held (a payload starts {"k":N, with N its events; else 1).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = redis.call('HSTRLEN', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local total = redis.call('HINCRBY', KEYS[2], 'bytes', string.len(ARGV[2]) - old)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[1])
local limit, limit_bytes = tonumber(ARGV[3]), tonumber(ARGV[5])
local dropped = 0
local count = redis.call('ZCARD', KEYS[1])
-- The newest job stays even alone beyond the bytes (one request is bounded by its size).
while count > limit or (total > limit_bytes and count > 1) do
  local oldest = redis.call('ZPOPMIN', KEYS[1])
  local payload = redis.call('HGET', KEYS[2], oldest[1])
  if payload then
    redis.call('HDEL', KEYS[2], oldest[1])
    total = redis.call('HINCRBY', KEYS[2], 'bytes', -string.len(payload))
    dropped = dropped + (tonumber(string.match(payload, '^{"k":(%d+)')) or 1)
  end
  count = count - 1
end
return dropped
