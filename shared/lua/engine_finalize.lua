-- engine_finalize: the flip of `finalize`: the migration area becomes the
-- live datastore in one atomic step.
--
-- KEYS[1]  lock                            (hash: fencing_token)
-- KEYS[2]  mig:state                       KEYS[3]  mig:keys
-- KEYS[4]  mig:events                      KEYS[5]  mig:position_mi
-- KEYS[6]  mig:mi_counts                   KEYS[7]  ds:events
-- KEYS[8]  ds:position_mi                  KEYS[9]  ds:collections
-- KEYS[10] ds:migration_index              KEYS[11] ds:event_count
-- KEYS[12] ds:position                     KEYS[13] mig:keyframe:{target}:collections
-- then, as the caller read them:
--   l keys ds:models:{c}, one per member c of ds:collections;
--   k pairs mig:keyframe:{target}:{c}, ds:models:{c}, one per member c of
--     mig:keyframe:{target}:collections;
--   a keys, the members of mig:keys.
--
-- ARGV[1] fencing token of the caller
-- ARGV[2] target MI, ARGV[3] registry fingerprint
-- ARGV[4] l, ARGV[5] k, ARGV[6] a
-- ARGV[7..] the l live collection names, then the k keyframe collection names
--
-- Returns {positions, events, already}: the positions and events now live;
-- `already` is 1 when the flip had been done before (a retry after its answer
-- was lost: the migration area is gone and the live MI is the target, which
-- only the flip produces once the caller's migrate pass saw another MI), and
-- nothing is written then.
--
-- Guarantees: refuses (FENCED) unless the caller holds the lock; refuses
-- (STALE) unless the keys passed are exactly the members of the three sets,
-- and the migration area is complete for the target: built for this
-- registry, cursor = ds:position = keyframe_cursor (the keyframes are flushed
-- up to the last position), every position 1..cursor has migrated events and
-- migrated MI = target, and every source of a RENAME exists; all of it is
-- checked before the first write. Then, atomically: the migrated events,
-- position MIs and target keyframes replace the live ones (live collections
-- without a keyframe are deleted), ds:collections, ds:migration_index and
-- ds:event_count are set, and the whole migration area is deleted. Old live
-- hashes and the area are removed with UNLINK, which frees them in a
-- background thread, so a big datastore does not block Redis while it is
-- freed. A crash leaves either the old live data plus the complete migration
-- area, or the new live data without it: never a mixture.
if redis.call('HGET', KEYS[1], 'fencing_token') ~= ARGV[1] then
  return redis.error_reply('FENCED fencing token ' .. ARGV[1] .. ' no longer holds the lock')
end
local target = ARGV[2]
if redis.call('EXISTS', KEYS[2]) == 0 and redis.call('GET', KEYS[10]) == target then
  return {tonumber(redis.call('GET', KEYS[12]) or '0'),
    tonumber(redis.call('GET', KEYS[11]) or '0'), 1}
end

local l, k, a = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local function same_members(set, first_name, count)
  if redis.call('SCARD', set) ~= count then
    return false
  end
  for j = first_name, first_name + count - 1 do
    if redis.call('SISMEMBER', set, ARGV[j]) == 0 then
      return false
    end
  end
  return true
end
local live_at, kf_at, area_at = 14, 14 + l, 14 + l + 2 * k
if not same_members(KEYS[9], 7, l) or not same_members(KEYS[13], 7 + l, k) then
  return redis.error_reply('STALE the collections changed since they were read')
end
if redis.call('SCARD', KEYS[3]) ~= a then
  return redis.error_reply('STALE the migration area keys changed since they were read')
end
for j = area_at, area_at + a - 1 do
  if redis.call('SISMEMBER', KEYS[3], KEYS[j]) == 0 then
    return redis.error_reply('STALE the migration area keys changed since they were read')
  end
end

local s = redis.call('HMGET', KEYS[2], 'cursor', 'target', 'fingerprint', 'migrated_events',
  'keyframe_cursor')
local cursor = tonumber(s[1] or '0')
local live = tonumber(redis.call('GET', KEYS[12]) or '0')
if s[2] ~= target or s[3] ~= ARGV[3] or cursor ~= live or s[5] ~= s[1] then
  return redis.error_reply('STALE the migration area is not complete for the target (cursor '
    .. tostring(s[1]) .. ', positions ' .. live .. ')')
end
if redis.call('HLEN', KEYS[4]) ~= cursor or redis.call('HLEN', KEYS[5]) ~= cursor
    or tonumber(redis.call('HGET', KEYS[6], target) or '0') ~= cursor then
  return redis.error_reply('STALE the migration area does not hold every position at the target')
end
for j = kf_at, kf_at + 2 * k - 1, 2 do
  if redis.call('EXISTS', KEYS[j]) == 0 then
    return redis.error_reply('STALE the keyframe ' .. KEYS[j] .. ' is missing')
  end
end

-- Every check passed: from here on, only writes.
for j = live_at, live_at + l - 1 do
  redis.call('UNLINK', KEYS[j])
end
for j = kf_at, kf_at + 2 * k - 1, 2 do
  redis.call('RENAME', KEYS[j], KEYS[j + 1])
end
redis.call('UNLINK', KEYS[9], KEYS[7], KEYS[8])
if k > 0 then
  redis.call('RENAME', KEYS[13], KEYS[9])
end
if cursor > 0 then
  redis.call('RENAME', KEYS[4], KEYS[7])
  redis.call('RENAME', KEYS[5], KEYS[8])
end
redis.call('SET', KEYS[10], target)
redis.call('SET', KEYS[11], s[4] or '0')
for j = area_at, area_at + a - 1 do
  redis.call('UNLINK', KEYS[j])
end
redis.call('UNLINK', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
return {cursor, tonumber(s[4] or '0'), 0}
