-- Included by the scripts that build or read the fields of a node's share (P:node:N).
--
-- A field is its parts, each written as <its length in bytes>:<its bytes> (keys.py
-- encode()/decode() on the Python side): any byte may occur in a part (user ids hold
-- U+001F, NUL, ':' ...), so no separator could ever tell the parts apart.
local function encode(...)
  local out = {}
  for i = 1, select('#', ...) do
    local part = select(i, ...)
    out[i] = #part .. ':' .. part
  end
  return table.concat(out)
end
local function decode(field)
  local parts = {}
  local at = 1
  while at <= #field do
    local colon = string.find(field, ':', at, true)
    local length = tonumber(string.sub(field, at, colon - 1))
    table.insert(parts, string.sub(field, colon + 1, colon + length))
    at = colon + length + 1
  end
  return parts
end
