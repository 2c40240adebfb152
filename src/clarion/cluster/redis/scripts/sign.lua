--!include _codec.lua
-- A socket signs in (ARGV[3] = 1) or out (-1). KEYS: P:users:A, this node's share.
-- Returns the user's signed-in sockets now.
local users, node = KEYS[1], KEYS[2]
local user, app, delta = ARGV[1], ARGV[2], tonumber(ARGV[3])
local count = redis.call('HINCRBY', users, user, delta)
if count <= 0 then redis.call('HDEL', users, user) end
local field = encode('u', app, user)
if redis.call('HINCRBY', node, field, delta) <= 0 then redis.call('HDEL', node, field) end
return count
