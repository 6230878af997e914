-- First step of forgetting one instance (dead, or leaving gracefully): its liveness and its
-- list of connections go, and its (connId, userId) pairs come back. Every key is in KEYS and
-- on the instance's slot (bus/keys.py). The per-user hashes live elsewhere on a cluster, so
-- the caller removes the pairs from them, then the instance from the set of instances, and
-- deletes conn_users last: a survivor that dies halfway leaves the instance listed and dead,
-- and the next one does it all again.
-- KEYS[1] = ws:instance:{id}:connections, KEYS[2] = ws:instance:{id}:conn_users,
-- KEYS[3] = ws:instance:{id}:alive
-- Returns the conn_users hash flat: connId, userId, connId, userId, ...
local pairs_ = redis.call('HGETALL', KEYS[2])
redis.call('DEL', KEYS[1], KEYS[3])
return pairs_
