-- Creates a topic's settings if missing and returns them, so every client
-- agrees on the partition count whoever created the topic.
-- KEYS[1] meta hash; ARGV[1] partitions, ARGV[2] maxlen ("" = none), ARGV[3] retention ms ("" = none)
-- Returns {partitions, maxlen, retention ms} ("" for unset).
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'partitions', ARGV[1])
  if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'maxlen', ARGV[2]) end
  if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'retention_ms', ARGV[3]) end
end
local v = redis.call('HMGET', KEYS[1], 'partitions', 'maxlen', 'retention_ms')
return {v[1] or '', v[2] or '', v[3] or ''}
