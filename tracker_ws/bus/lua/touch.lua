-- lastSeen of many connections and the TTL of their saved states, in one call (seed §4).
-- ARGV = state TTL (ms), then per connection: userId, connId, registry value, state key
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV, 4 do
  redis.call('HSET', 'ws:conn:user:' .. ARGV[i], ARGV[i + 1], ARGV[i + 2])
  redis.call('PEXPIRE', 'ws:state:' .. ARGV[i + 3], ttl)
end
return (#ARGV - 1) / 4
