-- Remove every registry entry of one instance (dead, or leaving gracefully).
-- KEYS[1] = ws:instance:{id}:connections, KEYS[2] = ws:instance:{id}:conn_users,
-- KEYS[3] = ws:instances, KEYS[4] = ws:instance:{id}:alive; ARGV[1] = instance id
local pairs_ = redis.call('HGETALL', KEYS[2])
local n = 0
for i = 1, #pairs_, 2 do
  redis.call('HDEL', 'ws:conn:user:' .. pairs_[i + 1], pairs_[i])
  n = n + 1
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
redis.call('SREM', KEYS[3], ARGV[1])
return n
