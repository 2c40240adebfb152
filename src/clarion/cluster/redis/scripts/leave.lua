--!include _counts.lua
-- A socket leaves a channel. KEYS: RedisKeys.channel_keys().
-- Returns {1 if the channel was vacated, 1 if the user's last socket left}.
local subs, node, members, info, usercount = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local channel, app, user, sep = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local count = redis.call('HINCRBY', subs, channel, -1)
if count <= 0 then redis.call('HDEL', subs, channel) end
bump(KEYS[6])
local field = 's' .. sep .. app .. sep .. channel
if redis.call('HINCRBY', node, field, -1) <= 0 then redis.call('HDEL', node, field) end
local removed = 0
if user ~= '' then
  local left = redis.call('HINCRBY', members, user, -1)
  if left <= 0 then
    redis.call('HDEL', members, user)
    redis.call('HDEL', info, user)
    set_user_count(usercount, members, channel)
    if left == 0 then removed = 1 end
  end
  field = 'm' .. sep .. app .. sep .. channel .. sep .. user
  if redis.call('HINCRBY', node, field, -1) <= 0 then redis.call('HDEL', node, field) end
end
local vacated = 0
if count == 0 then vacated = 1 end
return {vacated, removed}
