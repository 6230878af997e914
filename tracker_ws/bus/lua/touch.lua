-- lastSeen of many connections in one call (seed §4); one reply instead of one per connection.
-- KEYS = the ws:conn:user:{userId} hash of each connection (a single Redis only: in a cluster
-- they are on many slots and RedisPresence uses a pipeline).
-- ARGV = per connection, in KEYS order: connId, registry value
for i = 1, #KEYS do
  redis.call('HSET', KEYS[i], ARGV[2 * i - 1], ARGV[2 * i])
end
return #KEYS
