-- Takes pending messages of a partition for this member, with the delivery
-- count each now has (the count is what makes the attempt number).
--
-- KEYS[1] stream
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] mode:
--   'auto': ARGV[4] min idle ms, ARGV[5] most entries (at least 1), ARGV[6] cursor;
--           XAUTOCLAIM onwards from the cursor ('0-0' is the start)
--   'ids':  ARGV[4..] entry ids; XCLAIM exactly those
-- Returns {next cursor, {{entry id, fields, delivery count}, ...}}; the
-- cursor is '0-0' once the whole pending list was scanned (always for
-- 'ids'). Entries trimmed away while pending are dropped from the pending
-- list by Redis and skipped.
local stream, group, me = KEYS[1], ARGV[1], ARGV[2]
local claimed = {}
local cursor = '0-0'
if ARGV[3] == 'auto' then
  cursor = ARGV[6]
  local limit = tonumber(ARGV[5])
  repeat
    local r = redis.call('XAUTOCLAIM', stream, group, me, ARGV[4], cursor, 'COUNT',
      math.min(100, limit - #claimed))
    cursor = r[1]
    for _, e in ipairs(r[2]) do claimed[#claimed + 1] = e end
  until cursor == '0-0' or #claimed >= limit
else
  local ids = {}
  for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
  if #ids > 0 then
    local r = redis.call('XCLAIM', stream, group, me, 0, unpack(ids))
    for _, e in ipairs(r) do claimed[#claimed + 1] = e end
  end
end
local out = {}
for _, e in ipairs(claimed) do
  if type(e) == 'table' and type(e[2]) == 'table' then
    local p = redis.call('XPENDING', stream, group, e[1], e[1], 1)
    local count = 1
    if p[1] then count = p[1][4] end
    out[#out + 1] = {e[1], e[2], count}
  end
end
return {cursor, out}
