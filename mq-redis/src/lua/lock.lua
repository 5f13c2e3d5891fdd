-- Takes or renews a member's lock on a partition of a group.
-- KEYS[1] lock; ARGV[1] member, ARGV[2] lease ms
-- Returns 2 when newly taken, 1 when renewed, 0 when another member holds it.
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
elseif not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
