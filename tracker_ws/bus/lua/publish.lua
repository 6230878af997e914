-- Atomically: take the next global eventIds for a batch, send each instance its records
-- on its delivery channel, mirror last positions, drop duplicates and stale fixes, and append
-- replayable events to their bounded history streams.
-- Every key is in KEYS (a Redis Cluster routes by them; bus/keys.py puts them on one slot):
-- KEYS[1] = event id counter, KEYS[2] = last-position hash, KEYS[3] = last fix time hash,
-- KEYS[4] = the set of instances: the target '*' means every instance registered there now
-- (resolved here, in the same atomic step, so no instance misses an event because the
-- publisher's view of the cluster was a few seconds old).
-- KEYS[5...] = per item, in batch order: its dedupe key (if it has a dedupe id), then for each
-- of its history streams the stream key and the stream's floor key.
-- ARGV = n, dedupe TTL (s), history cap (entries per stream), history TTL (s), id floor,
--        batch: the n items packed into one string (redis.pack_batch; one argument instead
--        of ~8 per item, whose packing dominated the publisher's CPU). Per item, a header line
--        "<ntargets> <nhistory> <fix ms or -> <len vehicle> <len dedupe> <len payload>
--        <len target>... <len history stream>...\n" (lengths in bytes), then the strings
--        themselves, back to back: vehicleId ('' for none), dedupe id ('' for none),
--        target..., history stream..., payload.
--        Then the delivery channel prefix ('ws:deliver:') and the command that sends on it
--        ('PUBLISH'; a cluster: 'SPUBLISH' on a channel in the keys' slot).
-- The ARGV layout and the reply are private to this script and RedisFanout.publish: each
-- instance runs its own copy (by SHA), so instances of two versions share one Redis during a
-- rolling upgrade. What they share -- the delivery message format below, the keys and their
-- values -- must not change.
-- A position whose fix time is not newer than the vehicle's mirrored one is dropped (0 in the
-- returned ids): after a failover the new partition owner re-reads fixes that were already
-- published, and they must not go out again, nor move a vehicle back in time.
-- History entries use the eventId as their stream id, so "everything after N" is one XRANGE.
-- When a stream is trimmed past its cap, its floor key keeps the highest trimmed id, so a
-- reader can tell that events after its lastEventId may be gone.
-- An item whose dedupe id was seen within the TTL (the same event from Kafka and from a
-- Redis channel, or from two instances) gets no eventId: 0 among the returned ids.
-- Each delivery message is lines of "<eventId> <payload>\n" in increasing eventId order.
local n = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local history_ttl = tonumber(ARGV[4])
local floor = tonumber(ARGV[5])
local ids = {}
local per_target = {}
local order = {}
local blob = ARGV[6]
local deliver_prefix = ARGV[7]
local send = ARGV[8]
local kc = 5 -- the next item key in KEYS
local at = 1
local match, sub = string.match, string.sub
local ONE, NONE = {}, {}
-- A Redis that lost its data (restart without persistence, failover to a stale replica) must
-- not restart eventIds at 1: clients compare them. Start again above both the highest id the
-- calling instance has seen and the clock in milliseconds.
if redis.call('EXISTS', KEYS[1]) == 0 then
  if redis.replicate_commands then redis.replicate_commands() end
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('SET', KEYS[1], math.max(floor, now_ms))
end
for k = 1, n do
  local wanted = ONE
  local streams = NONE
  local nt, nh = 1, 0
  -- The common case, a position for one instance: one match, no tables.
  local fix_ms, vlen, dlen, plen, tlen, p =
    match(blob, '^1 0 (%S+) (%d+) (%d+) (%d+) (%d+)\n()', at)
  if fix_ms then
    at = p + vlen + dlen
    ONE[1] = sub(blob, at, at + tlen - 1)
    at = at - vlen - dlen
  else
    nt, nh, fix_ms, vlen, dlen, plen, p =
      match(blob, '^(%d+) (%d+) (%S+) (%d+) (%d+) (%d+)()', at)
    if not nt then
      return redis.error_reply('publish.lua: malformed batch at item ' .. k)
    end
    nt, nh = tonumber(nt), tonumber(nh)
    local lens = {}
    for j = 1, nt + nh do
      local len
      len, p = match(blob, '^ (%d+)()', p)
      lens[j] = tonumber(len)
    end
    at = p + 1 -- past the newline
    local from = at + vlen + dlen
    wanted = {}
    for t = 1, nt do
      wanted[t] = sub(blob, from, from + lens[t] - 1)
      from = from + lens[t]
    end
    streams = {}
    for j = 1, nh do
      streams[j] = sub(blob, from, from + lens[nt + j] - 1)
      from = from + lens[nt + j]
    end
    tlen = from - at - vlen - dlen -- targets and streams together
  end
  vlen, dlen, plen = tonumber(vlen), tonumber(dlen), tonumber(plen)
  if fix_ms == '-' then fix_ms = '' end
  local vehicle = sub(blob, at, at + vlen - 1)
  at = at + vlen
  local dedupe = sub(blob, at, at + dlen - 1)
  at = at + dlen + tlen
  local payload = sub(blob, at, at + plen - 1)
  at = at + plen
  local fresh = true
  if dedupe ~= '' then
    fresh = redis.call('SET', KEYS[kc], '1', 'NX', 'EX', ttl) ~= false
    kc = kc + 1
  end
  local kstreams = kc -- this item's stream keys (and floors) start here
  kc = kc + 2 * #streams
  if fresh and fix_ms ~= '' then
    local previous = redis.call('HGET', KEYS[3], vehicle)
    if previous and tonumber(previous) >= tonumber(fix_ms) then
      fresh = false
    else
      redis.call('HSET', KEYS[3], vehicle, fix_ms)
    end
  end
  if fresh then
    local id = redis.call('INCR', KEYS[1])
    ids[k] = id
    local line = id .. ' ' .. payload .. '\n'
    local targets = {}
    for t = 1, nt do
      local target = wanted[t]
      if target == '*' then
        for _, member in ipairs(redis.call('SMEMBERS', KEYS[4])) do
          targets[#targets + 1] = member
        end
      else
        targets[#targets + 1] = target
      end
    end
    for _, target in ipairs(targets) do
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
    for j = 1, #streams do
      local stream = KEYS[kstreams + 2 * (j - 1)]
      local floor_key = KEYS[kstreams + 2 * (j - 1) + 1]
      redis.call('XADD', stream, id .. '-0', 'e', payload)
      local len = redis.call('XLEN', stream)
      if len > cap then
        local old = redis.call('XRANGE', stream, '-', '+', 'COUNT', len - cap)
        redis.call('SET', floor_key, string.match(old[#old][1], '^(%d+)'),
          'EX', history_ttl)
        redis.call('XTRIM', stream, 'MAXLEN', cap)
      end
      redis.call('EXPIRE', stream, history_ttl)
    end
  else
    ids[k] = 0
  end
end
for _, target in ipairs(order) do
  redis.call(send, deliver_prefix .. target, table.concat(per_target[target]))
end
-- One string of n space-separated ids: a reply of n integers cost the caller's RESP parser
-- a read per item.
return table.concat(ids, ' ')
