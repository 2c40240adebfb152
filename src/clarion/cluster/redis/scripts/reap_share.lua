--!include _codec.lua
--!include _counts.lua
--!include _keys.lua
--!include _subtract_node.lua
-- Redis Cluster: subtract node N's share of one app (KEYS[1], P:node:{A}:N) and return
-- what that implies (see _subtract_node.lua). ARGV: the key templates. The share is
-- deleted in the same step, so a second reaper of the same share finds nothing and
-- reports nothing: each change is reported once.
return subtract_node(KEYS[1])
