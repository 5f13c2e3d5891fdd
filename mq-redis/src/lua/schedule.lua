-- Schedules a delayed message: the entry's fields go into the topic's
-- sorted set scored by due time, and the topic into the delay index (kept
-- at its earliest due time).
--
-- KEYS[1] delay zset, KEYS[2] delay index
-- ARGV[1] due ms, ARGV[2] topic, ARGV[3] partition, ARGV[4..] entry fields and values
-- The member is the msgpack array {partition, field, value, ...}: a
-- repeated schedule of the same message (a retried send) is the same
-- member, so it is not duplicated.
local m = {ARGV[3]}
for i = 4, #ARGV do m[#m + 1] = ARGV[i] end
redis.call('ZADD', KEYS[1], ARGV[1], cmsgpack.pack(m))
redis.call('ZADD', KEYS[2], 'LT', ARGV[1], ARGV[2])
return 1
