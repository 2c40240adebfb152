-- Included after _codec.lua, _counts.lua and _keys.lua.
--
-- Subtract a node's whole contribution from the cluster counts; return what that implies,
-- one array per change: {'r', version, app, channel, user} member removed, {'v', version,
-- app, channel} channel vacated, {'o', 0, app, user} user offline. version is the app's
-- P:ver:A after the subtraction.

-- Take n from a count; true when that leaves nothing (the field is then removed).
local function drop(key, field, n)
  if redis.call('HINCRBY', key, field, -n) > 0 then return false end
  redis.call('HDEL', key, field)
  return true
end
local function subtract_node(node)
  local fields = redis.call('HGETALL', node)
  local out = {}
  local versions = {}
  for i = 1, #fields, 2 do
    local parts, n = decode(fields[i]), tonumber(fields[i + 1])
    local kind, app = parts[1], parts[2]
    if kind ~= 'u' and not versions[app] then
      versions[app] = bump(string.format(K.ver, app))
    end
    if kind == 's' then
      if drop(string.format(K.subs, app), parts[3], n) then
        table.insert(out, {'v', versions[app], app, parts[3]})
      end
    elseif kind == 'm' then
      local channel, user = parts[3], parts[4]
      local key = string.format(K.members, app, channel)
      if drop(key, user, n) then
        redis.call('HDEL', string.format(K.info, app, channel), user)
        set_user_count(string.format(K.usercount, app), key, channel)
        table.insert(out, {'r', versions[app], app, channel, user})
      end
    elseif kind == 'u' then
      if drop(string.format(K.users, app), parts[3], n) then
        table.insert(out, {'o', 0, app, parts[3]})
      end
    end
  end
  redis.call('DEL', node)
  return out
end
