-- Take the turn to send a channel's subscription count for ARGV[1] ms (KEYS[1]:
-- P:countturn:A:C): 0 when this call takes it, else the milliseconds left of the current one.
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
return math.max(1, redis.call('PTTL', KEYS[1]))
