--!include _codec.lua
--!include _counts.lua
--!include _keys.lua
--!include _subtract_node.lua
--!include _add_share.lua
-- Redis Cluster: register.lua for one app's slot. Replace node N's share of app A
-- (KEYS[1], P:node:{A}:N) by ARGV[1] (JSON, see _add_share.lua: entries of app A only),
-- then the key templates. The lease is renewed apart (cluster_rejoin.lua, another slot).
subtract_node(KEYS[1])
add_share(KEYS[1], ARGV[1])
return true
