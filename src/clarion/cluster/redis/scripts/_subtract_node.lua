-- Included after _counts.lua and _keys.lua.
--
-- Subtract a node's whole contribution from the cluster counts; return what that implies
-- ('v' channel vacated, 'r' member removed, 'o' user offline, fields joined by sep).

-- Take n from a count; true when that leaves nothing (the field is then removed).
local function drop(key, field, n)
  if redis.call('HINCRBY', key, field, -n) > 0 then return false end
  redis.call('HDEL', key, field)
  return true
end
local function subtract_node(node, sep)
  local fields = redis.call('HGETALL', node)
  local out = {}
  local changed = {}
  for i = 1, #fields, 2 do
    local f, n = fields[i], tonumber(fields[i + 1])
    local parts = {}
    local start = 1
    for _ = 1, 3 do
      local at = string.find(f, sep, start, true)
      if not at then break end
      table.insert(parts, string.sub(f, start, at - 1))
      start = at + 1
    end
    table.insert(parts, string.sub(f, start))
    local kind, app = parts[1], parts[2]
    if kind ~= 'u' and not changed[app] then
      changed[app] = true
      bump(string.format(K.ver, app))
    end
    if kind == 's' then
      if drop(string.format(K.subs, app), parts[3], n) then
        table.insert(out, 'v' .. sep .. app .. sep .. parts[3])
      end
    elseif kind == 'm' then
      local channel, user = parts[3], parts[4]
      local key = string.format(K.members, app, channel)
      if drop(key, user, n) then
        redis.call('HDEL', string.format(K.info, app, channel), user)
        set_user_count(string.format(K.usercount, app), key, channel)
        table.insert(out, 'r' .. sep .. app .. sep .. channel .. sep .. user)
      end
    elseif kind == 'u' then
      if drop(string.format(K.users, app), parts[3], n) then
        table.insert(out, 'o' .. sep .. app .. sep .. parts[3])
      end
    end
  end
  redis.call('DEL', node)
  return out
end
