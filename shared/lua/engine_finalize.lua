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
--
-- ARGV[1] fencing token of the caller
-- ARGV[2] target MI, ARGV[3] registry fingerprint
-- ARGV[4] the key prefix `{PREFIX}:`: the per-collection keys
--         (`ds:models:{c}`, `mig:keyframe:{target}:{c}`) and the members of
--         mig:keys are built from it; all share the prefix's hash tag, so the
--         script stays in one Cluster slot.
--
-- Guarantees: refuses (FENCED) unless the caller holds the lock; refuses
-- (STALE) unless the migration area is complete for the target: built for this
-- registry, cursor = ds:position = keyframe_cursor (the keyframes are flushed
-- up to the last position), and every position 1..cursor has migrated
-- events and migrated MI = target. Then, atomically: the migrated events,
-- position MIs and target keyframes replace the live ones (live collections
-- without a keyframe are deleted), ds:collections, ds:migration_index and
-- ds:event_count are set, and the whole migration area is deleted. Old live
-- hashes are removed with UNLINK, which frees them in a background thread, so
-- a big datastore does not block Redis while it is freed. A crash leaves
-- either the old live data plus the complete migration area, or the new live
-- data without it: never a mixture.
if redis.call('HGET', KEYS[1], 'fencing_token') ~= ARGV[1] then
  return redis.error_reply('FENCED fencing token ' .. ARGV[1] .. ' no longer holds the lock')
end
local target, base = ARGV[2], ARGV[4]
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

for _, collection in ipairs(redis.call('SMEMBERS', KEYS[9])) do
  redis.call('UNLINK', base .. 'ds:models:' .. collection)
end
for _, collection in ipairs(redis.call('SMEMBERS', KEYS[13])) do
  redis.call('RENAME', base .. 'mig:keyframe:' .. target .. ':' .. collection,
    base .. 'ds:models:' .. collection)
end
redis.call('UNLINK', KEYS[9], KEYS[7], KEYS[8])
if redis.call('EXISTS', KEYS[13]) == 1 then
  redis.call('RENAME', KEYS[13], KEYS[9])
end
if cursor > 0 then
  redis.call('RENAME', KEYS[4], KEYS[7])
  redis.call('RENAME', KEYS[5], KEYS[8])
end
redis.call('SET', KEYS[10], target)
redis.call('SET', KEYS[11], s[4] or '0')
for _, key in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  redis.call('UNLINK', key)
end
redis.call('UNLINK', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
return {cursor, tonumber(s[4] or '0')}
