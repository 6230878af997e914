-- Atomically: take the next global eventIds for a batch, send each instance its records
-- on ws:deliver:{instanceId}, mirror last positions, and drop duplicates.
-- KEYS[1] = event id counter, KEYS[2] = last-position hash
-- ARGV = n, dedupe TTL (s), then per item: ntargets, target..., vehicleId ('' for none),
--        dedupe id ('' for none), payload
-- An item whose dedupe id was seen within the TTL (the same event from Kafka and from a
-- Redis channel, or from two instances) gets no eventId: 0 in the returned list.
-- Each delivery message is lines of "<eventId> <payload>\n" in increasing eventId order.
local n = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local ids = {}
local per_target = {}
local order = {}
local i = 3
for k = 1, n do
  local nt = tonumber(ARGV[i])
  local vehicle = ARGV[i + nt + 1]
  local dedupe = ARGV[i + nt + 2]
  local payload = ARGV[i + nt + 3]
  local fresh = true
  if dedupe ~= '' then
    fresh = redis.call('SET', 'ws:dedupe:' .. dedupe, '1', 'NX', 'EX', ttl) ~= false
  end
  if fresh then
    local id = redis.call('INCR', KEYS[1])
    ids[k] = id
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
  else
    ids[k] = 0
  end
  i = i + nt + 4
end
for _, target in ipairs(order) do
  redis.call('PUBLISH', 'ws:deliver:' .. target, table.concat(per_target[target]))
end
return ids
