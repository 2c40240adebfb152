--!include _codec.lua
--!include _counts.lua
-- A socket leaves a channel. KEYS: RedisKeys.channel_keys(), then P:left:enc(A,C,U)
-- for a presence leave. ARGV[4]: milliseconds the user's last leave stays marked (the
-- webhook hold-back; 0: not marked). Returns {1 if the channel was vacated, 1 if the
-- user's last socket left, the version of this change (P:ver:A)}.
local subs, node, members, info, usercount = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local channel, app, user, hold = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local count = redis.call('HINCRBY', subs, channel, -1)
if count <= 0 then redis.call('HDEL', subs, channel) end
local version = bump(KEYS[6])
local field = encode('s', app, channel)
if redis.call('HINCRBY', node, field, -1) <= 0 then redis.call('HDEL', node, field) end
local removed = 0
if user ~= '' then
  local left = redis.call('HINCRBY', members, user, -1)
  if left <= 0 then
    redis.call('HDEL', members, user)
    redis.call('HDEL', info, user)
    set_user_count(usercount, members, channel)
    if left == 0 then
      removed = 1
      if hold > 0 then redis.call('SET', KEYS[7], '1', 'PX', hold) end
    end
  end
  field = encode('m', app, channel, user)
  if redis.call('HINCRBY', node, field, -1) <= 0 then redis.call('HDEL', node, field) end
end
local vacated = 0
if count == 0 then vacated = 1 end
return {vacated, removed, version}
