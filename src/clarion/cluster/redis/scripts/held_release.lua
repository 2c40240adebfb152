-- The delay of hold ARGV[2] is over. KEYS: the mark, the cluster hash whose field
-- ARGV[1] must be absent for the event to hold. 1 when the event is to be sent.
local mark = redis.call('GET', KEYS[1])
if mark then
  if mark ~= ARGV[2] then return 0 end
  redis.call('DEL', KEYS[1])
end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
return 1
