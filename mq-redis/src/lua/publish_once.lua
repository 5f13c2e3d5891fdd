-- Publishes one message under an idempotency key, atomically with the key.
-- A key seen within the window returns the first receipt instead.
--
-- KEYS[1] idempotency key, KEYS[2] stream, KEYS[3] delay zset, KEYS[4] delay index
-- ARGV[1] window ms, ARGV[2] receipt head "<message id>|<partition>",
-- ARGV[3] due ms ("" = now), ARGV[4] topic, ARGV[5] partition,
-- ARGV[6] trim strategy ("", "MAXLEN", "MINID"), ARGV[7] trim threshold,
-- ARGV[8..] entry fields and values
-- Returns {1, first receipt} for a duplicate, {0, receipt} when written;
-- a receipt is "<message id>|<partition>|<entry id, empty when delayed>".
local first = redis.call('GET', KEYS[1])
if first then
  return {1, first}
end
local entry = ''
if ARGV[3] ~= '' then
  local m = {ARGV[5]}
  for i = 8, #ARGV do m[#m + 1] = ARGV[i] end
  redis.call('ZADD', KEYS[3], ARGV[3], cmsgpack.pack(m))
  redis.call('ZADD', KEYS[4], 'LT', ARGV[3], ARGV[4])
else
  local args = {KEYS[2]}
  if ARGV[6] ~= '' then
    args[#args + 1] = ARGV[6]
    args[#args + 1] = '~'
    args[#args + 1] = ARGV[7]
  end
  args[#args + 1] = '*'
  for i = 8, #ARGV do args[#args + 1] = ARGV[i] end
  entry = redis.call('XADD', unpack(args))
end
local receipt = ARGV[2] .. '|' .. entry
redis.call('SET', KEYS[1], receipt, 'NX', 'PX', ARGV[1])
return {0, receipt}
