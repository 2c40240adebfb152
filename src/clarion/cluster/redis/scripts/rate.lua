-- Take ARGV[1] from the one-second window KEYS[1] (P:rate:K:T) holding at most ARGV[2];
-- 1 when taken, 0 (and nothing taken) when short.
local used = redis.call('INCRBY', KEYS[1], ARGV[1])
if used == tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], 2000) end
if used > tonumber(ARGV[2]) then
  redis.call('DECRBY', KEYS[1], ARGV[1])
  return 0
end
return 1
