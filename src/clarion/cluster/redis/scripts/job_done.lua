-- Job ARGV[1] is delivered or given up: forget it and its bytes. KEYS: P:wh:due:Q,
-- P:wh:jobs:Q (see job_add.lua).
redis.call('ZREM', KEYS[1], ARGV[1])
local size = redis.call('HSTRLEN', KEYS[2], ARGV[1])
if size > 0 then
  redis.call('HDEL', KEYS[2], ARGV[1])
  if redis.call('HINCRBY', KEYS[2], 'bytes', -size) <= 0 then
    redis.call('HDEL', KEYS[2], 'bytes')
  end
end
return size
