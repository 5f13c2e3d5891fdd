-- Moves due delayed messages into their streams. Each message leaves the
-- sorted set and enters its stream in this one atomic script, so none is
-- lost or duplicated, and any number of clients may run it concurrently.
--
-- KEYS[1] delay index
-- ARGV[1] now ms, ARGV[2] most messages to move, ARGV[3] key prefix ("mq:")
-- Returns {moved, earliest due ms still scheduled or -1}.
local index = KEYS[1]
local now = ARGV[1]
local limit = tonumber(ARGV[2])
local prefix = ARGV[3]
local moved = 0
local topics = redis.call('ZRANGEBYSCORE', index, '-inf', now, 'LIMIT', 0, 64)
for _, topic in ipairs(topics) do
  local zkey = prefix .. '{' .. topic .. '}:delay'
  local due = redis.call('ZRANGEBYSCORE', zkey, '-inf', now, 'LIMIT', 0, limit - moved)
  for _, member in ipairs(due) do
    local ok, m = pcall(cmsgpack.unpack, member)
    if ok and type(m) == 'table' and #m >= 3 then
      local stream = prefix .. '{' .. topic .. '}:s:' .. m[1]
      redis.call('XADD', stream, '*', unpack(m, 2))
    end
    redis.call('ZREM', zkey, member)
    moved = moved + 1
  end
  local first = redis.call('ZRANGE', zkey, 0, 0, 'WITHSCORES')
  if first[2] then
    redis.call('ZADD', index, first[2], topic)
  else
    redis.call('ZREM', index, topic)
  end
  if moved >= limit then break end
end
local next_due = redis.call('ZRANGE', index, 0, 0, 'WITHSCORES')
return {moved, next_due[2] or '-1'}
