--!include _codec.lua
--!include _counts.lua
--!include _keys.lua
--!include _subtract_node.lua
--!include _add_share.lua
-- After an outage (or an expired lease): replace this node's share by what it holds
-- now, and renew its lease, in one step, so that no other node ever sees the counts
-- without this node's sockets. KEYS: P:nodes, P:node:N. ARGV: N, lease (ms), the share
-- as JSON (see _add_share.lua), then the key templates.
local nodes, node = KEYS[1], KEYS[2]
local node_id, lease = ARGV[1], tonumber(ARGV[2])
subtract_node(node)
add_share(node, ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', nodes, now + lease, node_id)
return true
