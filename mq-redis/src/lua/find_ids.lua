-- After a send whose outcome is unknown (the connection broke before the
-- reply), finds which of its messages the stream already holds, scanning
-- back from the newest entry to entries older than the send.
--
-- KEYS[1] stream
-- ARGV[1] oldest entry ms to look at, ARGV[2] most entries to scan, ARGV[3..] message ids
-- Returns {message id, entry id, ...} for the ids found.
local wanted = {}
for i = 3, #ARGV do wanted[ARGV[i]] = true end
local found = {}
local oldest = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local scanned = 0
local last = '+'
while scanned < limit do
  local batch = redis.call('XREVRANGE', KEYS[1], last, '-', 'COUNT', 256)
  if #batch == 0 then break end
  for _, e in ipairs(batch) do
    local id = e[1]
    if tonumber(string.match(id, '^(%d+)')) < oldest then return found end
    local f = e[2]
    for j = 1, #f, 2 do
      if f[j] == 'i' then
        if wanted[f[j + 1]] then
          found[#found + 1] = f[j + 1]
          found[#found + 1] = id
        end
        break
      end
    end
    scanned = scanned + 1
    last = '(' .. id
  end
end
return found
