--!include _codec.lua
--!include _counts.lua
-- A socket joins a channel (and, in a presence channel, its user the members).
-- KEYS: RedisKeys.channel_keys(), then P:left:enc(A,C,U) for a presence join.
-- Returns {sockets now, 1 if the user was added, every member's user_info (presence) or
-- false, the version of this change (P:ver:A), 1 if the added user had left within the
-- hold-back (its webhooks cancel out)}; {-1, 0, false, 0, 0} when the channel is full.
local subs, node, members, info, usercount = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local channel, app, user, user_info = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local limit = tonumber(ARGV[5])
if user ~= '' and redis.call('HEXISTS', members, user) == 0
   and redis.call('HLEN', members) >= limit then
  return {-1, 0, false, 0, 0}
end
local count = redis.call('HINCRBY', subs, channel, 1)
local version = bump(KEYS[6])
redis.call('HINCRBY', node, encode('s', app, channel), 1)
local added = 0
local returned = 0
local everyone = false
if user ~= '' then
  if redis.call('HINCRBY', members, user, 1) == 1 then
    redis.call('HSET', info, user, user_info)
    set_user_count(usercount, members, channel)
    added = 1
    -- Taken in the same script as the join is decided: a leave marked on another node
    -- an instant ago is seen, whichever node each socket was on.
    returned = redis.call('DEL', KEYS[7])
  end
  redis.call('HINCRBY', node, encode('m', app, channel, user), 1)
  everyone = redis.call('HGETALL', info)
end
return {count, added, everyone, version, returned}
