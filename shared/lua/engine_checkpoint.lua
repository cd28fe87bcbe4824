-- engine_checkpoint: one durable step of `migrate`, written atomically.
--
-- KEYS[1] lock             (hash: fencing_token)
-- KEYS[2] mig:state        (hash: cursor, target, fingerprint, source_events,
--                           migrated_events; and as of the last keyframe
--                           flush: keyframe_cursor, min_mi,
--                           keyframe_source_events, keyframe_migrated_events)
-- KEYS[3] mig:keys         (set: every migration-area key)
-- KEYS[4] mig:events       (hash: position -> JSON events at the migrated MI)
-- KEYS[5] mig:position_mi  (hash: position -> migrated MI)
-- KEYS[6] mig:mi_counts    (hash: migrated MI -> positions at it)
-- KEYS[7..] the keyframe keys this batch writes (hashes and their
--           collections sets), referenced by index from ARGV
--
-- ARGV[1]  fencing token of the caller
-- ARGV[2]  'fresh' (delete the existing migration area first: it was built for
--          another registry, or there is none), 'continue' (ARGV[3] must equal
--          mig:state.cursor) or 'resume' (ARGV[3] must equal
--          mig:state.keyframe_cursor: the positions after it are deleted and
--          the counters set back to the flush, because the caller redoes them
--          from the keyframes it loaded)
-- ARGV[3]  the cursor the caller continues from
-- ARGV[4]  the new cursor (last position of this batch)
-- ARGV[5]  target MI, ARGV[6] registry fingerprint, ARGV[7] lowest keyframe MI
--          when this checkpoint flushes the keyframes, else ''
--          (a flush writes every keyframe model changed since the last flush,
--          and makes this cursor the one a crashed run resumes from)
-- ARGV[8]  live events read by this batch, ARGV[9] migrated events written
-- ARGV[10] n, then n triples: position, migrated MI, JSON events
-- then g, then g groups: index of the keyframe hash in KEYS, index of its
--          collections set in KEYS, collection name, c, then c pairs id, JSON model
-- then the index in KEYS of the metrics hash (the last key), credited with
--          this batch's positions and live events (shared/src/metrics.rs);
--          optional (absent: nothing is counted), so that no caller can make
--          the script fail after its writes
--
-- Guarantees: nothing is written unless the lock's fencing_token is the
-- caller's (error FENCED) and, when continuing, the migration area is the one
-- the caller's in-memory keyframes were loaded from (error STALE). The batch's
-- events, MIs, counts, changed keyframe models and the cursor change together,
-- so a crash leaves the area exactly at one checkpoint. mig:mi_counts counts
-- each position once (only newly added position fields are counted).
-- The metrics counters `positions_migrated`/`events_migrated` change in the
-- same step, and count a position redone after a resume only once (the
-- rolled-back positions become a debt in mig:state that the redo pays off).
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
  local field = 'cursor'
  if ARGV[2] == 'resume' then
    field = 'keyframe_cursor'
  end
  local s = redis.call('HMGET', state, field, 'target', 'fingerprint', 'cursor')
  if not s[1] and field == 'keyframe_cursor' then
    s[1] = '0' -- no flush yet: resume from the start
  end
  if s[1] ~= ARGV[3] or s[2] ~= ARGV[5] or s[3] ~= ARGV[6] then
    return redis.error_reply('STALE the migration area is no longer at ' .. field .. ' ' .. ARGV[3])
  end
  if ARGV[2] == 'resume' then
    -- Positions after the keyframe flush are redone by the caller: forget
    -- them, so that the counts stay exact.
    local removed = 0
    for position = tonumber(ARGV[3]) + 1, tonumber(s[4]) do
      local mi = redis.call('HGET', KEYS[5], position)
      if mi then
        redis.call('HDEL', KEYS[5], position)
        redis.call('HINCRBY', KEYS[6], mi, -1)
      end
      redis.call('HDEL', KEYS[4], position)
    end
    local k = redis.call('HMGET', state, 'keyframe_source_events', 'keyframe_migrated_events')
    -- >>> metrics: the positions rolled back were credited already; their
    -- redo pays this debt off instead of counting them twice
    local credited = redis.call('HGET', state, 'source_events') or '0'
    local rolled_positions = tonumber(s[4] or ARGV[3]) - tonumber(ARGV[3])
    local rolled_events = tonumber(credited) - tonumber(k[1] or '0')
    if rolled_positions > 0 then
      redis.call('HINCRBY', state, 'metrics_positions_debt', rolled_positions)
    end
    if rolled_events > 0 then
      redis.call('HINCRBY', state, 'metrics_events_debt', rolled_events)
    end
    -- <<< metrics
    redis.call('HSET', state, 'cursor', ARGV[3], 'source_events', k[1] or '0',
      'migrated_events', k[2] or '0')
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
local events, counts = {}, {}
for _ = 1, n do
  local position, mi, json = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  events[#events + 1] = position
  events[#events + 1] = json
  -- HSET returns 1 for a new field: count each position once.
  if redis.call('HSET', KEYS[5], position, mi) == 1 then
    counts[mi] = (counts[mi] or 0) + 1
  end
  i = i + 3
end
hset_pairs(KEYS[4], events, 1, n)
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
redis.call('HSET', state, 'cursor', ARGV[4], 'target', ARGV[5], 'fingerprint', ARGV[6])
local source = redis.call('HINCRBY', state, 'source_events', ARGV[8])
local migrated = redis.call('HINCRBY', state, 'migrated_events', ARGV[9])
if ARGV[7] ~= '' then
  redis.call('HSET', state, 'keyframe_cursor', ARGV[4], 'min_mi', ARGV[7],
    'keyframe_source_events', source, 'keyframe_migrated_events', migrated)
end

-- >>> metrics: credit this batch's positions and live events (less what a
-- resume left as a debt)
local metrics = ARGV[i] and KEYS[tonumber(ARGV[i])]
local function credit(debt_field, amount)
  local debt = tonumber(redis.call('HGET', state, debt_field) or '0')
  if debt <= 0 then
    return amount
  end
  local paid = math.min(debt, amount)
  if paid == debt then
    -- paid off: mig:state is again what an undisturbed run leaves
    redis.call('HDEL', state, debt_field)
  else
    redis.call('HINCRBY', state, debt_field, -paid)
  end
  return amount - paid
end
if metrics then
  redis.call('HINCRBY', metrics, 'positions_migrated', credit('metrics_positions_debt', n))
  redis.call('HINCRBY', metrics, 'events_migrated', credit('metrics_events_debt', tonumber(ARGV[8])))
end
-- <<< metrics
return 'OK'
