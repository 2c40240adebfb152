--!include _codec.lua
--!include _counts.lua
--!include _keys.lua
--!include _subtract_node.lua
-- A node that died or left: only the survivor that removes it from the lease set does
-- the subtraction (with ARGV[2] = '1'), so what it implies is reported exactly once.
-- KEYS: P:nodes, P:node:N. ARGV: N, check, then the key templates.
local nodes, node = KEYS[1], KEYS[2]
local node_id, check = ARGV[1], ARGV[2]
if check == '1' and redis.call('ZREM', nodes, node_id) == 0 then return false end
if check ~= '1' then redis.call('ZREM', nodes, node_id) end
return subtract_node(node)
