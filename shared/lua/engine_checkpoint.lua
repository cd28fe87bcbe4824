-- engine_checkpoint: one durable step of `migrate`, written atomically.
--
-- KEYS[1] lock             (hash: fencing_token)
-- KEYS[2] mig:state        (hash: cursor, target, fingerprint, source_events,
--                           migrated_events; and as of the last keyframe
--                           flush: keyframe_cursor, min_mi,
--                           keyframe_source_events, keyframe_migrated_events;
--                           as of the last flush of the lowest keyframe:
--                           lowest_cursor, lowest_mi)
-- KEYS[3] mig:keys         (set: every migration-area key)
-- KEYS[4] mig:events       (hash: position -> JSON events at the migrated MI)
-- KEYS[5] mig:position_mi  (hash: position -> migrated MI)
-- KEYS[6] mig:mi_counts    (hash: migrated MI -> positions at it)
-- KEYS[7..] the keyframe keys this batch writes (hashes and their
--           collections sets), referenced by index from ARGV; then, in mode
--           'fresh', every member of mig:keys as the caller read it (the keys
--           deleted), the last `a` keys (ARGV, last)
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
-- ARGV[10] '1' when the flush includes the lowest keyframe (below the target:
--          its changed models since its last flush are in the groups), else ''
-- ARGV[11] n, then n triples: position, migrated MI, JSON events
-- then g, then g groups: index of the keyframe hash in KEYS, index of its
--          collections set in KEYS, collection name, c, then c pairs id, JSON model
-- then a: the number of old area keys at the end of KEYS ('fresh' only, else 0)
-- then the index in KEYS of the metrics hash (after the keyframe keys, before
--          the old area keys), credited with this batch's positions and live
--          events (shared/src/metrics.rs); optional (absent: nothing is
--          counted), so that no caller can make the script fail after its writes
--
-- Returns 'OK' when written, 'ALREADY' when this very checkpoint had been
-- written before (a retry after its answer was lost): nothing is written then.
--
-- Guarantees: nothing is written unless the lock's fencing_token is the
-- caller's (error FENCED) and, when continuing, the migration area is the one
-- the caller's in-memory keyframes were loaded from (error STALE); in mode
-- 'fresh', unless the old area keys passed are exactly mig:keys (STALE). A
-- checkpoint that already landed is recognised: the area is at its new cursor
-- (and, when it flushes, its keyframe cursor and lowest MI), which within one
-- fenced run no other checkpoint produces (each continues from the cursor the
-- previous one wrote). A 'resume' checkpoint without a flush is not
-- recognised but rewritten, which yields the same bytes; 'fresh' likewise.
-- The batch's events, MIs, counts, changed keyframe models and the cursor
-- change together, so a crash leaves the area exactly at one checkpoint.
-- mig:mi_counts counts each position once (only newly added position fields
-- are counted).
-- The metrics counters `positions_migrated`/`events_migrated` change in the
-- same step (not for an 'ALREADY'), and count a position redone after a
-- resume only once (the rolled-back positions become a debt in mig:state
-- that the redo pays off).
if redis.call('HGET', KEYS[1], 'fencing_token') ~= ARGV[1] then
  return redis.error_reply('FENCED fencing token ' .. ARGV[1] .. ' no longer holds the lock')
end
local state, area = KEYS[2], KEYS[3]
local flush = ARGV[7] ~= ''

-- Where the argument list ends: the groups are walked once to find `a`.
local n = tonumber(ARGV[11])
local i = 12 + 3 * n
local groups_at = i
local groups = tonumber(ARGV[i])
i = i + 1
for _ = 1, groups do
  i = i + 4 + 2 * tonumber(ARGV[i + 3])
end
local old_keys = tonumber(ARGV[i])
local metrics = ARGV[i + 1] and KEYS[tonumber(ARGV[i + 1])] -- metrics

if ARGV[2] == 'fresh' then
  if redis.call('SCARD', area) ~= old_keys then
    return redis.error_reply('STALE the migration area keys changed since they were read')
  end
  for k = #KEYS - old_keys + 1, #KEYS do
    if redis.call('SISMEMBER', area, KEYS[k]) == 0 then
      return redis.error_reply('STALE the migration area keys changed since they were read')
    end
  end
  for k = #KEYS - old_keys + 1, #KEYS do
    redis.call('UNLINK', KEYS[k])
  end
  redis.call('UNLINK', area, state, KEYS[4], KEYS[5], KEYS[6])
else
  local field = 'cursor'
  if ARGV[2] == 'resume' then
    field = 'keyframe_cursor'
  end
  local s = redis.call('HMGET', state, field, 'target', 'fingerprint', 'cursor',
    'keyframe_cursor', 'min_mi')
  if not s[1] and field == 'keyframe_cursor' then
    s[1] = '0' -- no flush yet: resume from the start
  end
  if s[2] ~= ARGV[5] or s[3] ~= ARGV[6] then
    return redis.error_reply('STALE the migration area was not built for this registry')
  end
  if s[1] ~= ARGV[3] then
    if s[4] == ARGV[4] and (not flush or (s[5] == ARGV[4] and s[6] == ARGV[7])) then
      return 'ALREADY'
    end
    return redis.error_reply('STALE the migration area is no longer at ' .. field .. ' ' .. ARGV[3])
  end
  if ARGV[2] == 'resume' then
    -- Positions after the keyframe flush are redone by the caller: forget
    -- them, so that the counts stay exact.
    for position = tonumber(ARGV[3]) + 1, tonumber(s[4] or ARGV[3]) do
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
    if metrics and rolled_positions > 0 then
      redis.call('HINCRBY', state, 'metrics_positions_debt', rolled_positions)
    end
    if metrics and rolled_events > 0 then
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
  local j = 0
  while j < count do
    local m = math.min(CHUNK, count - j)
    local batch = {}
    for x = 0, m - 1 do
      batch[2 * x + 1] = args[first + 2 * (j + x)]
      batch[2 * x + 2] = args[first + 2 * (j + x) + 1]
    end
    redis.call('HSET', key, unpack(batch))
    j = j + m
  end
end

i = 12
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

i = groups_at + 1
for _ = 1, groups do
  local hash, set = KEYS[tonumber(ARGV[i])], KEYS[tonumber(ARGV[i + 1])]
  local collection, count = ARGV[i + 2], tonumber(ARGV[i + 3])
  if count > 0 then
    hset_pairs(hash, ARGV, i + 4, count)
    redis.call('SADD', set, collection)
    redis.call('SADD', area, hash, set)
  end
  i = i + 4 + 2 * count
end

redis.call('SADD', area, KEYS[4], KEYS[5], KEYS[6])
redis.call('HSET', state, 'cursor', ARGV[4], 'target', ARGV[5], 'fingerprint', ARGV[6])
local source = redis.call('HINCRBY', state, 'source_events', ARGV[8])
local migrated = redis.call('HINCRBY', state, 'migrated_events', ARGV[9])
if flush then
  redis.call('HSET', state, 'keyframe_cursor', ARGV[4], 'min_mi', ARGV[7],
    'keyframe_source_events', source, 'keyframe_migrated_events', migrated)
  if ARGV[10] == '1' then
    redis.call('HSET', state, 'lowest_cursor', ARGV[4], 'lowest_mi', ARGV[7])
  end
end

-- >>> metrics: credit this batch's positions and live events (less what a
-- resume left as a debt)
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
