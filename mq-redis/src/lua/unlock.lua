-- Releases a member's lock on a partition, only if it still holds it.
-- KEYS[1] lock; ARGV[1] member. Returns 1 when released.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
