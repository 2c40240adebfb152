-- Included after _codec.lua, _counts.lua and _keys.lua.
--
-- Add a node's share (JSON, as built by Membership._write_share) to the cluster counts
-- and to the node's own hash. The share:
-- [["s", app, channel, n], ["m", app, channel, user, n, user_info], ["u", app, user, n]].
local function add_share(node, json)
  local changed = {}
  for _, e in ipairs(cjson.decode(json)) do
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
end
