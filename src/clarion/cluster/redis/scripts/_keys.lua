-- Included by the scripts that touch the keys of whatever apps a node's share names.
-- The last six ARGV are the key templates of RedisKeys.script_templates() (keys.py),
-- '%s' standing for the app id, then the channel: string.format(K.subs, app).
local K = {}
do
  local n = #ARGV
  K.ver, K.subs, K.members = ARGV[n - 5], ARGV[n - 4], ARGV[n - 3]
  K.info, K.usercount, K.users = ARGV[n - 2], ARGV[n - 1], ARGV[n]
end
