-- Atomically: take the next global eventIds for a batch, send each instance its records
-- on ws:deliver:{instanceId}, and mirror last positions.
-- KEYS[1] = event id counter, KEYS[2] = last-position hash
-- ARGV = n, then per item: ntargets, target..., vehicleId ('' for none), payload
-- Each delivery message is lines of "<eventId> <payload>\n" in increasing eventId order.
local n = tonumber(ARGV[1])
local last = redis.call('INCRBY', KEYS[1], n)
local id = last - n
local per_target = {}
local order = {}
local i = 2
for _ = 1, n do
  id = id + 1
  local nt = tonumber(ARGV[i])
  local payload = ARGV[i + nt + 2]
  local vehicle = ARGV[i + nt + 1]
  local line = id .. ' ' .. payload .. '\n'
  for t = 1, nt do
    local target = ARGV[i + t]
    local buf = per_target[target]
    if buf == nil then
      buf = {}
      per_target[target] = buf
      order[#order + 1] = target
    end
    buf[#buf + 1] = line
  end
  if vehicle ~= '' then
    redis.call('HSET', KEYS[2], vehicle, id .. ' ' .. payload)
  end
  i = i + nt + 3
end
for _, target in ipairs(order) do
  redis.call('PUBLISH', 'ws:deliver:' .. target, table.concat(per_target[target]))
end
return last - n + 1
