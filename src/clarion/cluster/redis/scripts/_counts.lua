-- Included by the scripts that change channel or presence counts.
--
-- P:ver:A grows with every change to an app's counts (GET /channels replies are reused
-- until it does). It never falls behind the Redis clock in microseconds, so that a Redis
-- that lost its data, or came back from an older snapshot, or a replica that took over,
-- never hands out again a number a node has seen. bump() returns the new value: the
-- version of the change, which also orders presence member events against member lists
-- (a member list read at version v already holds every change of version <= v).
local function bump(ver)
  local t = redis.call('TIME')
  local now = t[1] .. string.rep('0', 6 - #t[2]) .. t[2]  -- a string: SET keeps every digit
  local version = redis.call('INCR', ver)
  if version < tonumber(now) then
    redis.call('SET', ver, now)
    return tonumber(now)
  end
  return version
end
-- How many distinct users a presence channel has, kept in P:usercount:A next to the
-- socket counts so that GET /channels?info=user_count reads two hashes, not one per channel.
local function set_user_count(usercount, members, channel)
  local n = redis.call('HLEN', members)
  if n > 0 then redis.call('HSET', usercount, channel, n)
  else redis.call('HDEL', usercount, channel) end
end
