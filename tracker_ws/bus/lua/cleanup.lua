-- Take one instance's registry list and forget the instance's own keys, atomically (dead, or
-- leaving gracefully). Every key is in KEYS and on the instance's slot (bus/keys.py); the
-- per-user hashes live elsewhere in a cluster, so the caller removes the returned pairs
-- from them and the instance from the set of instances.
-- KEYS[1] = ws:instance:{id}:connections, KEYS[2] = ws:instance:{id}:conn_users,
-- KEYS[3] = ws:instance:{id}:alive
-- Returns the conn_users hash flat: connId, userId, connId, userId, ...
local pairs_ = redis.call('HGETALL', KEYS[2])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return pairs_
