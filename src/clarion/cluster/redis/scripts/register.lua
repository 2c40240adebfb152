--!include _codec.lua
--!include _counts.lua
--!include _keys.lua
--!include _subtract_node.lua
-- After an outage (or an expired lease): replace this node's share by what it holds
-- now, and renew its lease, in one step, so that no other node ever sees the counts
-- without this node's sockets. KEYS: P:nodes, P:node:N. ARGV: N, lease (ms), the share
-- as JSON, then the key templates. The share:
-- [["s", app, channel, n], ["m", app, channel, user, n, user_info], ["u", app, user, n]].
local nodes, node = KEYS[1], KEYS[2]
local node_id, lease = ARGV[1], tonumber(ARGV[2])
subtract_node(node)
local changed = {}
for _, e in ipairs(cjson.decode(ARGV[3])) do
  local kind, app = e[1], e[2]
  if kind ~= 'u' and not changed[app] then
    changed[app] = true
    bump(string.format(K.ver, app))
  end
  if kind == 's' then
    redis.call('HINCRBY', string.format(K.subs, app), e[3], e[4])
    redis.call('HINCRBY', node, encode('s', app, e[3]), e[4])
  elseif kind == 'm' then
    local members = string.format(K.members, app, e[3])
    redis.call('HINCRBY', members, e[4], e[5])
    redis.call('HSET', string.format(K.info, app, e[3]), e[4], e[6])
    set_user_count(string.format(K.usercount, app), members, e[3])
    redis.call('HINCRBY', node, encode('m', app, e[3], e[4]), e[5])
  elseif kind == 'u' then
    redis.call('HINCRBY', string.format(K.users, app), e[3], e[4])
    redis.call('HINCRBY', node, encode('u', app, e[3]), e[4])
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', nodes, now + lease, node_id)
return true
