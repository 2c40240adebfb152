-- The opposite event came: take the live mark KEYS[1] (P:held:...); 1 if there was one.
local mark = redis.call('GET', KEYS[1])
if not mark or mark == 'taken' then return 0 end
redis.call('SET', KEYS[1], 'taken', 'KEEPTTL')
return 1
