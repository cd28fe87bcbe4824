-- engine_checkpoint: one durable step of `migrate`, written atomically.
--
-- KEYS[1] lock             (hash: fencing_token)
-- KEYS[2] mig:state        (hash: cursor, target, fingerprint, min_mi,
--                           source_events, migrated_events)
-- KEYS[3] mig:keys         (set: every migration-area key)
-- KEYS[4] mig:events       (hash: position -> JSON events at the migrated MI)
-- KEYS[5] mig:position_mi  (hash: position -> migrated MI)
-- KEYS[6] mig:mi_counts    (hash: migrated MI -> positions at it)
-- KEYS[7..] the keyframe keys this batch writes (hashes and their
--           collections sets), referenced by index from ARGV
--
-- ARGV[1]  fencing token of the caller
-- ARGV[2]  'fresh' (delete the existing migration area first: it was built for
--          another registry, or there is none) or 'continue'
-- ARGV[3]  the cursor the caller continues from ('continue': must equal
--          mig:state.cursor)
-- ARGV[4]  the new cursor (last position of this batch)
-- ARGV[5]  target MI, ARGV[6] registry fingerprint, ARGV[7] lowest keyframe MI
-- ARGV[8]  live events read by this batch, ARGV[9] migrated events written
-- ARGV[10] n, then n triples: position, migrated MI, JSON events
-- then g, then g groups: index of the keyframe hash in KEYS, index of its
--          collections set in KEYS, collection name, c, then c pairs id, JSON model
--
-- Guarantees: nothing is written unless the lock's fencing_token is the
-- caller's (error FENCED) and, when continuing, the migration area is the one
-- the caller's in-memory keyframes were loaded from (error STALE). The batch's
-- events, MIs, counts, changed keyframe models and the cursor change together,
-- so a crash leaves the area exactly at one checkpoint.
if redis.call('HGET', KEYS[1], 'fencing_token') ~= ARGV[1] then
  return redis.error_reply('FENCED fencing token ' .. ARGV[1] .. ' no longer holds the lock')
end
local state, area = KEYS[2], KEYS[3]
if ARGV[2] == 'fresh' then
  for _, key in ipairs(redis.call('SMEMBERS', area)) do
    redis.call('UNLINK', key)
  end
  redis.call('UNLINK', area, state, KEYS[4], KEYS[5], KEYS[6])
else
  local s = redis.call('HMGET', state, 'cursor', 'target', 'fingerprint')
  if s[1] ~= ARGV[3] or s[2] ~= ARGV[5] or s[3] ~= ARGV[6] then
    return redis.error_reply('STALE the migration area is no longer at cursor ' .. ARGV[3])
  end
end

local CHUNK = 200
local function hset_pairs(key, args, first, count)
  -- HSET in chunks: Lua's unpack has a small stack limit.
  local i = 0
  while i < count do
    local n = math.min(CHUNK, count - i)
    local batch = {}
    for j = 0, n - 1 do
      batch[2 * j + 1] = args[first + 2 * (i + j)]
      batch[2 * j + 2] = args[first + 2 * (i + j) + 1]
    end
    redis.call('HSET', key, unpack(batch))
    i = i + n
  end
end

local n = tonumber(ARGV[10])
local i = 11
local events, mis, counts = {}, {}, {}
for _ = 1, n do
  local position, mi, json = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  events[#events + 1] = position
  events[#events + 1] = json
  mis[#mis + 1] = position
  mis[#mis + 1] = mi
  counts[mi] = (counts[mi] or 0) + 1
  i = i + 3
end
hset_pairs(KEYS[4], events, 1, n)
hset_pairs(KEYS[5], mis, 1, n)
for mi, count in pairs(counts) do
  redis.call('HINCRBY', KEYS[6], mi, count)
end

local groups = tonumber(ARGV[i])
i = i + 1
for _ = 1, groups do
  local hash, set = KEYS[tonumber(ARGV[i])], KEYS[tonumber(ARGV[i + 1])]
  local collection, count = ARGV[i + 2], tonumber(ARGV[i + 3])
  hset_pairs(hash, ARGV, i + 4, count)
  redis.call('SADD', set, collection)
  redis.call('SADD', area, hash, set)
  i = i + 4 + 2 * count
end

redis.call('SADD', area, KEYS[4], KEYS[5], KEYS[6])
redis.call('HSET', state, 'cursor', ARGV[4], 'target', ARGV[5], 'fingerprint', ARGV[6],
  'min_mi', ARGV[7])
redis.call('HINCRBY', state, 'source_events', ARGV[8])
redis.call('HINCRBY', state, 'migrated_events', ARGV[9])
return 'OK'
